/* A postprocessor that hands the host images it must not trust, chosen by the asset's name:
 * "short-rows" (rows closer together than the width: reading them would run past the buffer),
 * "huge" (a side beyond what Kiln makes), "grown" (far larger than the asset and its input).
 * Any other name: the image unchanged. */
#include <kiln/plugin.h>
#include <stdlib.h>

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
static int named(const kiln_asset* asset, const char* name) {
  return asset->name.size == strlen(name) && memcmp(asset->name.data, name, asset->name.size) == 0;
}
static kiln_status fx_process(void* instance, const kiln_asset* asset, const kiln_image* image,
                              kiln_result* result) {
  const kiln_host_api* host = (const kiln_host_api*)instance;
  kiln_image out = *image;
  uint8_t* grown = NULL;
  if (named(asset, "short-rows")) {
    out.stride = image->width * 4 - 4;
  } else if (named(asset, "huge")) {
    out.width = 20000; /* never read: refused for its size */
    out.height = 3;
    out.stride = (size_t)out.width * 4;
  } else if (named(asset, "grown")) {
    out.width = asset->width * 3;
    out.height = asset->height * 3;
    out.stride = (size_t)out.width * 4;
    grown = (uint8_t*)calloc((size_t)out.width * out.height, 4);
    out.pixels = grown;
  }
  host->set_image(result, &out);
  free(grown);
  return KILN_OK;
}
static const kiln_postprocessor_functions fx_functions = {sizeof fx_functions, 0, fx_process,
                                                         NULL};
static const kiln_plugin_info fx_info = {KILN_PLUGIN_ABI_VERSION,
                                         sizeof(kiln_plugin_info),
                                         KILN_KIND_POSTPROCESSOR,
                                         "bad-image",
                                         "1.0.0",
                                         "Hands the host untrustworthy images (test fixture)",
                                         NULL,
                                         0,
                                         fx_create,
                                         fx_destroy,
                                         &fx_functions,
                                         KILN_PLUGIN_ABI_MINOR};
KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) {
  return &fx_info;
}
