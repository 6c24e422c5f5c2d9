/* Built "for" the next ABI: the host must refuse it and say which ABI it supports. */
#include "fixture_common.h"

FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION + 1, sizeof(kiln_plugin_info), KILN_KIND_VALIDATOR,
               "wrong-abi", fx_validate, NULL, 0)
