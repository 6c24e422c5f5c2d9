// The `not-corrupt` validator: the file decodes completely and is structurally whole. A full
// decode catches damaged data; the structure check catches truncations that lenient decoders
// fill in with grey.
#include <kiln/image_format.hpp>
#include <kiln/kiln.hpp>
#include <string>

namespace {

class NotCorrupt : public kiln::Validator {
public:
  explicit NotCorrupt(const kiln::Context&) {}

  kiln::Verdict validate(const kiln::Asset&, const kiln::ImageFile& file) override {
    if (file.size == 0)
      return kiln::Verdict::reject("file is empty");
    std::string_view bytes(reinterpret_cast<const char*>(file.bytes), file.size);
    if (auto problem = kiln::structural_problem(bytes))
      return kiln::Verdict::reject(*problem);
    if (!file.image)
      return kiln::Verdict::reject("image does not decode: " + std::string(file.decode_error));
    return kiln::Verdict::accept();
  }
};

} // namespace

KILN_PLUGIN(NotCorrupt, "not-corrupt", "1.0.0",
            "Rejects files that do not fully decode or are truncated")
