/* An id that cannot be written in a manifest. */
#include "fixture_common.h"

FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, sizeof(kiln_plugin_info), KILN_KIND_VALIDATOR, "Bad_Id",
               fx_validate, NULL, 0)
