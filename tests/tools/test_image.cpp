// Writes a real encoded image for the fake provider servers, which speak Python's standard
// library and cannot encode WebP or JPEG themselves. Uses the host's own encoder.
//
//   kiln-test-image <png|jpg|webp> <width> <height> <seed|black> <output file>
//
// "black" draws the all-black frame that safety filters return.
#include "image.hpp"
#include "util.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: kiln-test-image <png|jpg|webp> <width> <height> <seed> <file>\n");
    return 2;
  }
  try {
    std::string format = argv[1];
    auto width = uint32_t(std::stoul(argv[2]));
    auto height = uint32_t(std::stoul(argv[3]));
    bool black = std::string(argv[4]) == "black";
    unsigned long seed = black ? 0 : std::stoul(argv[4]);
    kiln::Image image(width, height);
    if (black) {
      for (uint32_t y = 0; y < height; ++y)
        for (uint32_t x = 0; x < width; ++x)
          image.at(x, y)[3] = 255;
      kiln::host::write_file_atomic(argv[5], kiln::host::encode_image(image, format));
      return 0;
    }
    // A diagonal gradient under a ring whose colours and place follow the seed: busy enough for
    // the not-blank validator, different for every seed.
    double cx = double(width) * (0.3 + double(seed % 5) * 0.1);
    double cy = double(height) * (0.3 + double(seed / 5 % 5) * 0.1);
    double r = double(std::min(width, height)) * 0.3;
    for (uint32_t y = 0; y < height; ++y)
      for (uint32_t x = 0; x < width; ++x) {
        uint8_t* p = image.at(x, y);
        double d = std::hypot(double(x) - cx, double(y) - cy);
        bool ring = std::fabs(d - r) < r * 0.15;
        p[0] = uint8_t(ring ? (seed * 53) % 256 : x * 255 / width);
        p[1] = uint8_t(ring ? (seed * 97) % 256 : y * 255 / height);
        p[2] = uint8_t(ring ? 240 : (seed * 31) % 256);
        p[3] = 255;
      }
    kiln::host::write_file_atomic(argv[5], kiln::host::encode_image(image, format));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-test-image: %s\n", e.what());
    return 1;
  }
  return 0;
}
