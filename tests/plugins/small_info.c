/* An info struct that claims to be smaller than ABI 1's. */
#include "fixture_common.h"

FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, 8, KILN_KIND_VALIDATOR, "small-info", fx_validate, NULL, 0)
