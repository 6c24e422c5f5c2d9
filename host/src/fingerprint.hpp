// The fingerprint: a SHA-256 over a canonical encoding of everything that shapes an asset's
// image, so that formatting, comments, key order and other assets never change it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::host {

// What is sent to a backend for one asset, after enhancers.
struct GenerationRequest {
  std::string prompt;
  std::string negative_prompt;
  std::string backend;         // plugin id
  std::string backend_version; // plugin version
  std::string model;
  uint32_t width = 0;
  uint32_t height = 0;
  std::string format;
  std::optional<uint64_t> seed;
  std::string params_json;
  std::vector<std::string> enhancers; // "id@version", in order applied
};

// Named canonical fields, in a fixed order. Stored in the state file so that `kiln plan` can say
// which one changed.
using FingerprintFields = std::vector<std::pair<std::string, std::string>>;

FingerprintFields fingerprint_fields(const GenerationRequest& request);
std::string fingerprint_of(const FingerprintFields& fields);

// "prompt changed", "model changed", "size changed"... for fields that differ; empty if none.
std::vector<std::string> describe_changes(const FingerprintFields& before,
                                          const FingerprintFields& after);

} // namespace kiln::host
