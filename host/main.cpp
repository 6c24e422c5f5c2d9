#include "cli.hpp"
#include "fatal.hpp"
#include "log.hpp"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  try {
    return kiln::host::cli_main(argc, argv);
  } catch (const kiln::host::Fatal& e) {
    // Messages quote files and servers: shown with their control characters escaped.
    std::fprintf(stderr, "%s%s\n",
                 e.located() ? "" : "kiln: error: ", kiln::host::escape_controls(e.what()).c_str());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: internal error: %s\n",
                 kiln::host::escape_controls(e.what()).c_str());
    return kiln::host::k_exit_usage;
  }
}
