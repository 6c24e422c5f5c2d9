/* Exits Kiln did not ask for. A plugin that calls exit(), _exit(), _Exit() or quick_exit()
 * would end the run with its own status, often 0, with the work undone and the build told it
 * succeeded. The kiln executable defines these functions itself and exports them, so a plugin's
 * call reaches them first (the dynamic linker searches the executable before libc, whatever
 * version of the symbol the plugin asked for): they name the plugin that was running and end
 * Kiln with exit code 2. Kiln never calls them itself: main returns, and libc's own exit path
 * after main does not come through here. */
#include <stdlib.h>
#include <unistd.h>

/* plugin_guard.cpp: prints what was running and ends the process with exit code 2. */
__attribute__((noreturn)) void kiln_unexpected_exit(const char* how, int status);

void exit(int status) {
  kiln_unexpected_exit("exit", status);
}
void _exit(int status) {
  kiln_unexpected_exit("_exit", status);
}
void _Exit(int status) {
  kiln_unexpected_exit("_Exit", status);
}
void quick_exit(int status) {
  kiln_unexpected_exit("quick_exit", status);
}
