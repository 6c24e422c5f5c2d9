// Ctrl-C during a build: the first SIGINT or SIGTERM asks the run to stop (no new assets start,
// backends cancel their remote jobs, the state is saved); a second one ends the process at once.
#pragma once

#include <cstdint>

namespace kiln::host {

// Installs the SIGINT/SIGTERM handlers. The first signal only sets the flag and restores the
// default action, so a second signal kills the process.
void install_interrupt_handlers();
bool interrupted();
// Sleeps up to `ms` milliseconds; returns false, early, once the run is interrupted.
bool sleep_unless_interrupted(uint32_t ms);

} // namespace kiln::host
