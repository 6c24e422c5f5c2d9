// Throws from everywhere the C++ adapter wraps: the host must see failures, never a crash.
#include <kiln/kiln.hpp>
#include <stdexcept>

namespace {

class Throws : public kiln::Validator {
public:
  explicit Throws(const kiln::Context& context) {
    if (context.options().get_bool("throw_in_create"))
      throw std::runtime_error("refusing to start");
  }
  static kiln::OptionSchema options() {
    return {{"throw_in_create", "throw from the constructor", KILN_OPTION_BOOL, "false"}};
  }
  kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile&) override {
    if (asset.name == "int")
      throw 42;
    if (asset.name == "typed")
      throw kiln::Error("typed failure", KILN_ERROR_RETRYABLE, 1500);
    throw std::logic_error("validate exploded");
  }
};

} // namespace

KILN_PLUGIN(Throws, "throws", "1.0.0", "Throws everywhere (test fixture)")
