// The `resolution` validator: the image must be exactly the asset's declared size.
#include <kiln/kiln.hpp>
#include <string>

namespace {

class Resolution : public kiln::Validator {
public:
  explicit Resolution(const kiln::Context&) {}

  kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile& file) override {
    if (!file.image)
      return kiln::Verdict::reject("cannot read the size: " + std::string(file.decode_error));
    if (file.image->width != asset.width || file.image->height != asset.height)
      return kiln::Verdict::reject("image is " + std::to_string(file.image->width) + "x" +
                                   std::to_string(file.image->height) + ", expected " +
                                   std::to_string(asset.width) + "x" +
                                   std::to_string(asset.height));
    return kiln::Verdict::accept();
  }
};

} // namespace

KILN_PLUGIN(Resolution, "resolution", "1.0.0",
            "Rejects images whose size is not the asset's width x height")
