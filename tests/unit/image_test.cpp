#include "image.hpp"
#include "test_support.hpp"

namespace kiln::host {
namespace {

Image gradient(uint32_t w, uint32_t h) {
  Image img(w, h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x) {
      uint8_t* p = img.at(x, y);
      p[0] = uint8_t(x * 255 / w);
      p[1] = uint8_t(y * 255 / h);
      p[2] = 128;
      p[3] = uint8_t(x < w / 2 ? 255 : 0);
    }
  return img;
}

TEST(Image, RoundTripsEveryFormatAtExactSize) {
  Image img = gradient(40, 30);
  for (const char* format : {"png", "jpg", "webp"}) {
    std::string bytes = encode_image(img, format);
    EXPECT_EQ(detect_format(bytes), format);
    auto back = decode_image(bytes);
    ASSERT_TRUE(back) << format << ": " << back.error().message;
    EXPECT_EQ(back->width, 40u);
    EXPECT_EQ(back->height, 30u);
  }
  // PNG is lossless, alpha included.
  EXPECT_EQ(decode_image(encode_image(img, "png"))->rgba, img.rgba);
}

TEST(Image, JpegFlattensTransparencyOntoWhite) {
  Image img = gradient(16, 16);
  auto back = decode_image(encode_image(img, "jpg"));
  ASSERT_TRUE(back);
  const uint8_t* transparent = back->at(14, 8);
  EXPECT_GT(transparent[0], 240);
  EXPECT_GT(transparent[2], 240);
  EXPECT_EQ(transparent[3], 255);
}

TEST(Image, FitCoversAndCropsWithoutStretching) {
  Image wide = gradient(200, 100);
  Image fitted = fit_image(wide, 50, 50);
  EXPECT_EQ(fitted.width, 50u);
  EXPECT_EQ(fitted.height, 50u);
  // The centre square was kept: red spans the middle half of the original, about 64..191.
  EXPECT_GT(fitted.at(1, 25)[0], 50);
  EXPECT_LT(fitted.at(48, 25)[0], 205);
  Image same = fit_image(wide, 200, 100);
  EXPECT_EQ(same.rgba, wide.rgba);
}

TEST(Image, DecodeRejectsWhatIsNotAnImage) {
  auto r = decode_image("hello");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "not a PNG, JPEG or WebP file");
}

// A 23000x23000 PNG of a few bytes (a decompression bomb) is refused from its header, before
// any pixel is allocated; one within the limits decodes (issue 16).
TEST(Image, ADecompressionBombIsRefusedFromItsHeader) {
  Image small(64, 64);
  std::string png = encode_image(small, "png");
  auto be32 = [](std::string& s, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i)
      s[at + size_t(i)] = char((v >> (24 - 8 * i)) & 0xff);
  };
  std::string bomb = png; // IHDR: width at byte 16, height at byte 20
  be32(bomb, 16, 23000);
  be32(bomb, 20, 23000);
  auto r = decode_image(bomb);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("23000x23000 pixels: larger than Kiln decodes"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().download, "unsupported");
  EXPECT_TRUE(decode_image(png));
}

} // namespace
} // namespace kiln::host
