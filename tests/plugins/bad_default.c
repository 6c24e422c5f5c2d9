/* An integer option whose schema default is no integer: refused at load, not when first used. */
#include "fixture_common.h"

static const kiln_option_spec options[] = {{"level", "", KILN_OPTION_INT, "high"}};
FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, sizeof(kiln_plugin_info), KILN_KIND_VALIDATOR,
               "bad-default", fx_validate, options, 1)
