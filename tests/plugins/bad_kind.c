/* A plugin of a kind this host does not know. */
#include "fixture_common.h"
static const kiln_validator_functions functions = {sizeof functions, fx_validate};
static const kiln_plugin_info info = {KILN_PLUGIN_ABI_VERSION,
                                      sizeof info,
                                      9,
                                      "bad-kind",
                                      "1.0.0",
                                      "",
                                      NULL,
                                      0,
                                      fx_create,
                                      fx_destroy,
                                      &functions};
KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) {
  return &info;
}
