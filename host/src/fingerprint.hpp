// The fingerprint: a SHA-256 over a canonical encoding of everything that shapes an asset's
// image, so that formatting, comments, key order and other assets never change it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::host {

// What is sent to a backend for one asset, after enhancers.
struct GenerationRequest {
  std::string prompt;
  std::string negative_prompt;
  std::string backend;         // plugin id
  std::string backend_version; // plugin version
  // The backend's options that can change an image, as the manifest sets them ("{caption=
  // b:false\n}"), "" when none is: a placeholder without captions is another image.
  std::string backend_options;
  std::string model;
  uint32_t width = 0;
  uint32_t height = 0;
  std::string format;
  std::optional<uint64_t> seed;
  std::string params_json;
  std::vector<std::string> enhancers; // "id@version", in order applied
  // The postprocessors' signatures ("id@version{options}"), in the order they run.
  std::vector<std::string> postprocess;
};

// Named canonical fields, in a fixed order. Stored in the state file so that `kiln plan` can say
// which one changed.
using FingerprintFields = std::vector<std::pair<std::string, std::string>>;

FingerprintFields fingerprint_fields(const GenerationRequest& request);
std::string fingerprint_of(const FingerprintFields& fields);
// The fingerprint of what the model is asked for, postprocessors left out: the key of the
// model's own image, which any postprocessing of it can start from.
std::string source_fingerprint_of(const GenerationRequest& request);

// A fingerprint as its 32 bytes, for what is kept per asset for a whole run (half the size of
// its hex text, and no allocation).
using Digest = std::array<uint8_t, 32>;
std::optional<Digest> digest_of_hex(std::string_view hex); // nullopt unless 64 hex digits
std::string hex_of(const Digest& digest);

// "prompt changed", "model changed", "size changed"... for fields that differ; empty if none.
std::vector<std::string> describe_changes(const FingerprintFields& before,
                                          const FingerprintFields& after);

} // namespace kiln::host
