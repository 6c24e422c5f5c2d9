// A backend declaring an option named like one of Kiln's own [backends.X] keys (concurrency):
// Kiln would take the value for itself and the plugin would silently get its default, so the
// library is refused at load, saying why.
#include <kiln/kiln.hpp>

namespace {

class Greedy : public kiln::Backend {
public:
  explicit Greedy(const kiln::Context&) {}
  static kiln::OptionSchema options() {
    return {{"concurrency", "how many at once (Kiln's own key)", KILN_OPTION_INT, "2"}};
  }
  void generate(const kiln::Request&, kiln::BackendResult&) override {
    throw kiln::Error("never called");
  }
};

} // namespace

KILN_PLUGIN(Greedy, "greedy", "1.0.0", "Declares a reserved option (test fixture)")
