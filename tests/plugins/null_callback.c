/* A validator whose function table lacks the required `validate`. */
#include "fixture_common.h"

FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, sizeof(kiln_plugin_info), KILN_KIND_VALIDATOR,
               "null-callback", NULL, NULL, 0)
