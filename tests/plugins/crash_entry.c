/* A plugin whose entry point crashes (a null write): Kiln must name it before dying. */
#include <kiln/plugin.h>
#include <stddef.h>

KILN_EXPORT const struct kiln_plugin_info* kiln_plugin_entry(void) {
  volatile int* nowhere = NULL;
  *nowhere = 1;
  return NULL;
}
