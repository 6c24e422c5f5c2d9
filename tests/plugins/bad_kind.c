/* A plugin of a kind this host does not know. */
#include "fixture_common.h"

FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, sizeof(kiln_plugin_info), 9, "bad-kind", fx_validate, NULL,
               0)
