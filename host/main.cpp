#include "cli.hpp"
#include "fatal.hpp"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  try {
    return kiln::host::cli_main(argc, argv);
  } catch (const kiln::host::Fatal& e) {
    std::fprintf(stderr, "%s%s\n", e.located() ? "" : "kiln: error: ", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: internal error: %s\n", e.what());
    return kiln::host::k_exit_usage;
  }
}
