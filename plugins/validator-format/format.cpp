// The `format` validator: the file's bytes must be the asset's declared format, whatever its
// name says.
#include <kiln/image_format.hpp>
#include <kiln/kiln.hpp>
#include <string>

namespace {

class Format : public kiln::Validator {
public:
  explicit Format(const kiln::Context&) {}

  kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile& file) override {
    std::string_view bytes(reinterpret_cast<const char*>(file.bytes), file.size);
    std::string_view actual = kiln::detect_format(bytes);
    if (actual.empty())
      return kiln::Verdict::reject("file is not a PNG, JPEG or WebP image");
    if (actual != asset.format)
      return kiln::Verdict::reject("file is " + std::string(actual) + ", expected " +
                                   std::string(asset.format));
    return kiln::Verdict::accept();
  }
};

} // namespace

KILN_PLUGIN(Format, "format", "1.0.0", "Rejects files that are not the asset's declared format")
