/* Built "for" the next ABI: the host must refuse it and say which ABI it supports. */
#include "fixture_common.h"
static const kiln_validator_functions functions = {sizeof functions, fx_validate};
static const kiln_plugin_info info = {KILN_PLUGIN_ABI_VERSION + 1,
                                      sizeof info,
                                      KILN_KIND_VALIDATOR,
                                      "wrong-abi",
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
