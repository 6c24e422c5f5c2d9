// `max-colours`: a validator for pixel art and palette-limited platforms. It counts the
// distinct colours of the image (RGBA, with fully transparent pixels counted once as
// "transparent") and rejects an image that uses more than `max_colours`.
//
// Everything a validator needs is in <kiln/kiln.hpp>: a class with a constructor taking a
// kiln::Context (for options), an option schema, and validate(); KILN_PLUGIN exports it.
#include <cstdint>
#include <kiln/kiln.hpp>
#include <string>
#include <unordered_set>

namespace {

class MaxColours : public kiln::Validator {
public:
  explicit MaxColours(const kiln::Context& context)
      : m_max(context.options().get_int("max_colours")) {
    if (m_max < 1)
      throw kiln::Error("max_colours must be at least 1"); // shown at the manifest's table
  }

  // Options are read from `[validators.max-colours]` in assets.toml; kiln checks their names
  // and types against this schema before the plugin is created.
  static kiln::OptionSchema options() {
    return {{"max_colours", "most distinct colours an image may use", KILN_OPTION_INT, "32"}};
  }

  kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile& file) override {
    if (!file.image) // kiln decoded the file fully; if it could not, say why
      return kiln::Verdict::reject("cannot count colours: " + std::string(file.decode_error));
    std::unordered_set<uint32_t> colours;
    for (uint32_t y = 0; y < file.image->height; ++y)
      for (uint32_t x = 0; x < file.image->width; ++x) {
        const uint8_t* p = file.pixel(x, y);
        uint32_t rgba =
            p[3] == 0 ? 0u
                      : uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
        colours.insert(rgba);
        if (colours.size() > size_t(m_max)) // enough to decide
          return kiln::Verdict::reject(std::string(asset.name) + " uses more than " +
                                       std::to_string(m_max) + " colours (max_colours)");
      }
    return kiln::Verdict::accept();
  }

private:
  int64_t m_max;
};

} // namespace

KILN_PLUGIN(MaxColours, "max-colours", "1.0.0",
            "Rejects images that use more distinct colours than max_colours")
