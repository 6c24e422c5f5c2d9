/* A well-formed validator that takes the id of a built-in one. */
#include "fixture_common.h"

FIXTURE_PLUGIN(KILN_PLUGIN_ABI_VERSION, sizeof(kiln_plugin_info), KILN_KIND_VALIDATOR, "not-blank",
               fx_validate, NULL, 0)
