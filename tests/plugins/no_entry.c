/* A shared library named like a plugin that exports no entry symbol. */
#include <kiln/plugin.h>
KILN_EXPORT int not_the_entry(void) {
  return 42;
}
