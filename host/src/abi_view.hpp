// The plugin boundary, host side: the C structs (kiln_asset, kiln_request) a plugin call gets,
// as views into the host's own types. Nothing here owns text: a view lives no longer than what
// it points into.
#pragma once

#include "fingerprint.hpp"
#include "manifest.hpp"

#include <kiln/plugin.h>
#include <string>
#include <vector>

namespace kiln::host {

inline kiln_str ks(const std::string& s) {
  return {s.data(), s.size()};
}

// The plugin-facing view of an asset; points into the AssetSpec (and `model`, when given: the
// model a retry strategy switched to).
struct AssetView {
  std::vector<kiln_str> fallback_models, modifiers, postprocess;
  kiln_asset asset{};
  const kiln_asset* get() const { return &asset; }
};
AssetView asset_view(const AssetSpec& spec, const std::string* model = nullptr);

// The plugin-facing view of a request for `asset` (a view from asset_view()).
kiln_request request_view(const GenerationRequest& r, const kiln_asset* asset,
                          const std::string& fingerprint, const std::string& work_dir,
                          uint32_t attempt = 1, const std::string& resume_job_id = {},
                          bool lost_create = false);

} // namespace kiln::host
