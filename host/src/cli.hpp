// The command line: each `kiln` command (build, plan, adopt, outputs, plugins) reads its
// arguments, opens what it needs (manifest, plugins, state, cache, kiln.lock) and calls the
// engine. main.cpp only calls cli_main() and prints what escapes as a Fatal.
#pragma once

namespace kiln::host {

// Runs one `kiln` command line and returns its exit code. Throws Fatal for usage, manifest and
// plugin errors (main prints them).
int cli_main(int argc, char** argv);

} // namespace kiln::host
