#include "image.hpp"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <png.h>
#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>
#include <stdexcept>
#include <webp/decode.h>
#include <webp/encode.h>

namespace kiln::host {

// The picture's size as its header declares it, without decoding; false when unreadable.
// A PNG's is read from IHDR here: stbi_info refuses what it thinks too large without saying
// the size (a decompression bomb must be refused by its size, not as "corrupt").
static bool header_size(std::string_view bytes, std::string_view format, int& w, int& h) {
  if (format == "png" && bytes.size() >= 24 && bytes.substr(12, 4) == "IHDR") {
    auto be32 = [&](size_t at) {
      uint64_t v = 0;
      for (size_t i = 0; i < 4; ++i)
        v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
      return int(std::min<uint64_t>(v, uint64_t(INT32_MAX)));
    };
    w = be32(16);
    h = be32(20);
    return true;
  }
  int channels = 0;
  return format == "webp" ? WebPGetInfo(reinterpret_cast<const uint8_t*>(bytes.data()),
                                        bytes.size(), &w, &h) != 0
                          : stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                                                  int(bytes.size()), &w, &h, &channels) != 0;
}

std::optional<ImageProbe> probe_image(std::string_view bytes) {
  std::string_view format = detect_format(bytes);
  if (format.empty())
    return std::nullopt;
  int w = 0, h = 0;
  bool known = header_size(bytes, format, w, h);
  if (!known || w <= 0 || h <= 0)
    return std::nullopt;
  return ImageProbe{std::string(format), uint32_t(w), uint32_t(h)};
}

namespace {

// The pixels being decoded right now, by every job: a decode waits while others hold the budget
// (one image larger than it alone still goes, when nothing else decodes).
class DecodeGate {
public:
  class Ticket {
  public:
    Ticket(DecodeGate& gate, uint64_t pixels) : m_gate(gate), m_pixels(pixels) {}
    ~Ticket() { m_gate.release(m_pixels); }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

  private:
    DecodeGate& m_gate;
    uint64_t m_pixels;
  };
  Ticket admit(uint64_t pixels, uint64_t budget) {
    std::unique_lock lock(m_mutex);
    m_freed.wait(lock, [&] { return m_in_flight == 0 || m_in_flight + pixels <= budget; });
    m_in_flight += pixels;
    return Ticket(*this, pixels);
  }

private:
  void release(uint64_t pixels) {
    {
      std::lock_guard lock(m_mutex);
      m_in_flight -= pixels;
    }
    m_freed.notify_all();
  }
  std::mutex m_mutex;
  std::condition_variable m_freed;
  uint64_t m_in_flight = 0;
};

DecodeGate g_decodes;

} // namespace

Result<Image> decode_image(std::string_view bytes, uint64_t max_pixels) {
  std::string_view format = detect_format(bytes);
  if (format.empty()) {
    std::string what = bytes.substr(0, 6) == "GIF87a" || bytes.substr(0, 6) == "GIF89a" ? "a GIF"
                       : bytes.find("<html") != std::string_view::npos ||
                               bytes.find("<HTML") != std::string_view::npos
                           ? "an HTML page"
                           : "not a PNG, JPEG or WebP file";
    Fault f{KILN_ERROR_PERMANENT,
            what == "not a PNG, JPEG or WebP file" ? what : what + ", not a PNG, JPEG or WebP file",
            -1};
    f.download = "unsupported";
    return f;
  }
  // The size first, from the header: a small file can declare a picture that takes gigabytes
  // to decode (a decompression bomb).
  int w = 0, h = 0;
  bool known = header_size(bytes, format, w, h);
  if (known && (w <= 0 || h <= 0 || uint32_t(w) > k_max_image_side_px ||
                uint32_t(h) > k_max_image_side_px || uint64_t(w) * uint64_t(h) > max_pixels)) {
    char megapixels[32];
    std::snprintf(megapixels, sizeof megapixels, "%g", double(max_pixels) / 1e6);
    Fault f{KILN_ERROR_PERMANENT,
            std::string(format) + " of " + std::to_string(w) + "x" + std::to_string(h) +
                " pixels: larger than Kiln decodes (" + std::to_string(k_max_image_side_px) +
                " a side, " + megapixels + " megapixels: [project] max_image_megapixels)",
            -1};
    f.download = "unsupported";
    return f;
  }
  // Unknown sizes (a header the sniffer does not read) count as the whole budget.
  auto ticket = g_decodes.admit(known ? uint64_t(w) * uint64_t(h) : max_pixels, max_pixels);
  Image out;
  if (format == "webp") {
    // Straight into the image: no second copy of a large picture.
    WebPBitstreamFeatures features;
    if (WebPGetFeatures(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &features) !=
            VP8_STATUS_OK ||
        features.width <= 0 || features.height <= 0 ||
        uint64_t(features.width) * uint64_t(features.height) > max_pixels)
      return Fault{KILN_ERROR_PERMANENT, "WebP data is corrupt or truncated", -1, 0, "corrupt"};
    out = Image(uint32_t(features.width), uint32_t(features.height));
    if (!WebPDecodeRGBAInto(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                            out.rgba.data(), out.rgba.size(), int(out.width * 4)))
      return Fault{KILN_ERROR_PERMANENT, "WebP data is corrupt or truncated", -1, 0, "corrupt"};
    return out;
  }
  int channels = 0;
  stbi_uc* px = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                                      int(bytes.size()), &w, &h, &channels, 4);
  if (!px)
    return Fault{KILN_ERROR_PERMANENT,
                 std::string(format == "png" ? "PNG" : "JPEG") + " data is corrupt (" +
                     stbi_failure_reason() + ")",
                 -1, 0, "corrupt"};
  out = Image(uint32_t(w), uint32_t(h));
  std::memcpy(out.rgba.data(), px, out.rgba.size());
  stbi_image_free(px);
  return out;
}

Image fit_image(const Image& in, uint32_t width, uint32_t height) {
  if (in.width == width && in.height == height)
    return in;
  double scale = std::max(double(width) / in.width, double(height) / in.height);
  uint32_t crop_w = std::clamp<uint32_t>(uint32_t(std::lround(width / scale)), 1, in.width);
  uint32_t crop_h = std::clamp<uint32_t>(uint32_t(std::lround(height / scale)), 1, in.height);
  uint32_t x0 = (in.width - crop_w) / 2, y0 = (in.height - crop_h) / 2;
  Image out(width, height);
  stbir_resize_uint8_srgb(in.at(x0, y0), int(crop_w), int(crop_h), int(in.width * 4),
                          out.rgba.data(), int(width), int(height), 0, 4, 3, 0);
  return out;
}

Image scale_image(const Image& in, uint32_t width, uint32_t height) {
  if (in.width == width && in.height == height)
    return in;
  Image out(width, height);
  stbir_resize_uint8_srgb(in.rgba.data(), int(in.width), int(in.height), int(in.width * 4),
                          out.rgba.data(), int(width), int(height), 0, 4, 3, 0);
  return out;
}

namespace {

// PNG through libpng: zlib's deflate state is a few fixed-size blocks per image, where stb's
// writer makes thousands of growing allocations per image; over 10,000 images those fragmented
// each worker's malloc arena and peak memory grew with the number of assets.
std::string encode_png(const Image& image) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw std::runtime_error("PNG encoding failed: out of memory");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("PNG encoding failed");
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t size) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<char*>(data), size);
      },
      nullptr);
  png_set_IHDR(png, info, image.width, image.height, 8, PNG_COLOR_TYPE_RGBA, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (uint32_t y = 0; y < image.height; ++y)
    png_write_row(png, const_cast<png_bytep>(image.rgba.data() + size_t(y) * image.width * 4));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void append(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
}

} // namespace

std::string encode_image(const Image& image, std::string_view format) {
  std::string out;
  int w = int(image.width), h = int(image.height);
  if (format == "png") {
    out = encode_png(image);
  } else if (format == "jpg") {
    std::vector<uint8_t> rgb(size_t(w) * h * 3);
    for (size_t i = 0, n = size_t(w) * h; i < n; ++i) {
      unsigned a = image.rgba[i * 4 + 3];
      for (int c = 0; c < 3; ++c)
        rgb[i * 3 + c] = uint8_t((image.rgba[i * 4 + c] * a + 255 * (255 - a) + 127) / 255);
    }
    if (!stbi_write_jpg_to_func(append, &out, w, h, 3, rgb.data(), 90))
      throw std::runtime_error("JPEG encoding failed");
  } else if (format == "webp") {
    uint8_t* data = nullptr;
    size_t size = WebPEncodeRGBA(image.rgba.data(), w, h, w * 4, 90.0f, &data);
    if (size == 0)
      throw std::runtime_error("WebP encoding failed");
    out.assign(reinterpret_cast<const char*>(data), size);
    WebPFree(data);
  } else {
    throw std::runtime_error("unknown image format '" + std::string(format) + "'");
  }
  return out;
}

} // namespace kiln::host
