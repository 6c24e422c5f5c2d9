/* A plugin whose library constructor ends the process, as a broken plugin can: _exit(0), or
 * exit(0) when KILN_FIXTURE_EXIT=exit. Kiln must not exit 0 with its work undone. */
#include <kiln/plugin.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void end_everything(void) {
  const char* how = getenv("KILN_FIXTURE_EXIT");
  if (how && strcmp(how, "exit") == 0)
    exit(0);
  _exit(0);
}

KILN_EXPORT const struct kiln_plugin_info* kiln_plugin_entry(void) {
  return NULL;
}
