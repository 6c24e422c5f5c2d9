/* Shared pieces of the broken test plugins: a validator that accepts everything, which each
 * fixture then breaks in exactly one way (selected by FIXTURE_* macros). */
#include <kiln/plugin.h>

static kiln_status fx_create(const kiln_host_api* host, const kiln_options* options,
                             void** instance, kiln_result* result) {
  (void)options;
  (void)result;
  *instance = (void*)host;
  return KILN_OK;
}
static void fx_destroy(void* instance) {
  (void)instance;
}
static kiln_status fx_validate(void* instance, const kiln_asset* asset, const kiln_image_file* file,
                               kiln_result* result) {
  (void)instance;
  (void)asset;
  (void)file;
  (void)result;
  return KILN_OK;
}

/* Defines the plugin info and the entry symbol; each fixture passes the one field it breaks. */
#define FIXTURE_PLUGIN(abi, info_size, kind, id, validate, options, option_count)                  \
  static const kiln_validator_functions fx_functions = {sizeof fx_functions, validate};            \
  static const kiln_plugin_info fx_info = {abi,       info_size,  kind,         id,                \
                                           "1.0.0",   "",         options,      option_count,      \
                                           fx_create, fx_destroy, &fx_functions};                  \
  KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) {                                    \
    return &fx_info;                                                                               \
  }
