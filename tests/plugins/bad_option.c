/* An option schema entry of an unknown type. */
#include "fixture_common.h"

static const kiln_option_spec options[] = {{"level", "", 42, "1"}};
FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, sizeof(kiln_plugin_info), KILN_KIND_VALIDATOR, "bad-option",
               fx_validate, options, 1)
