/* A well-formed validator that takes the id of a built-in one. */
#include "fixture_common.h"
static const kiln_validator_functions functions = {sizeof functions, fx_validate};
static const kiln_plugin_info info = {KILN_PLUGIN_ABI_VERSION,
                                      sizeof info,
                                      KILN_KIND_VALIDATOR,
                                      "not-blank",
                                      "9.9.9",
                                      "",
                                      NULL,
                                      0,
                                      fx_create,
                                      fx_destroy,
                                      &functions};
KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) {
  return &info;
}
