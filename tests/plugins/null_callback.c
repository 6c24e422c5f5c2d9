/* A validator whose function table lacks the required `validate`. */
#include "fixture_common.h"
static const kiln_validator_functions functions = {sizeof functions, NULL};
static const kiln_plugin_info info = {KILN_PLUGIN_ABI_VERSION,
                                      sizeof info,
                                      KILN_KIND_VALIDATOR,
                                      "null-callback",
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
