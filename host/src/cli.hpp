#pragma once

namespace kiln::host {

// Runs one `kiln` command line and returns its exit code. Throws Fatal for usage, manifest and
// plugin errors (main prints them).
int cli_main(int argc, char** argv);

} // namespace kiln::host
