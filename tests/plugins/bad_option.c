/* An option schema entry of an unknown type. */
#include "fixture_common.h"
static const kiln_option_spec options[] = {{"level", "", 42, "1"}};
static const kiln_validator_functions functions = {sizeof functions, fx_validate};
static const kiln_plugin_info info = {KILN_PLUGIN_ABI_VERSION,
                                      sizeof info,
                                      KILN_KIND_VALIDATOR,
                                      "bad-option",
                                      "1.0.0",
                                      "",
                                      options,
                                      1,
                                      fx_create,
                                      fx_destroy,
                                      &functions};
KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) {
  return &info;
}
