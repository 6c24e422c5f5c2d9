// An ABI 1.0 validator: rejects an image whose centre pixel is transparent (its Verdict has no
// property to report). With `reject_seed` it rejects images made without that seed, so a retry
// strategy gets to run.
#include <kiln/kiln.hpp>

namespace {

class OldCentre : public kiln::Validator {
public:
  explicit OldCentre(const kiln::Context&) {}
  kiln::Verdict validate(const kiln::Asset&, const kiln::ImageFile& file) override {
    if (!file.image)
      return kiln::Verdict::reject("cannot decode");
    const uint8_t* centre = file.pixel(file.image->width / 2, file.image->height / 2);
    if (centre[3] != 255)
      return kiln::Verdict::reject("the centre is not opaque");
    return kiln::Verdict::accept();
  }
};

} // namespace

KILN_PLUGIN(OldCentre, "old-centre", "1.0.0",
            "Rejects images with a transparent centre (built against the ABI 1.0 SDK)")
