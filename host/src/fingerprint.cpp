#include "fingerprint.hpp"

#include "util.hpp"

#include <algorithm>

namespace kiln::host {

namespace {

// Bump when the host's own treatment of images changes what is written for the same request
// (resizing, encoders): every asset then regenerates from its cache entry or backend.
constexpr const char* k_encoding_version = "kiln-fingerprint-1";

} // namespace

FingerprintFields fingerprint_fields(const GenerationRequest& r) {
  return {
      {"backend", r.backend + "@" + r.backend_version},
      {"model", r.model},
      {"prompt", r.prompt},
      {"negative_prompt", r.negative_prompt},
      {"width", std::to_string(r.width)},
      {"height", std::to_string(r.height)},
      {"format", r.format},
      {"seed", r.seed ? std::to_string(*r.seed) : "none"},
      {"params", r.params_json},
      {"enhancers", join(r.enhancers, ",")},
  };
}

std::string fingerprint_of(const FingerprintFields& fields) {
  // Length-prefixed so that no value can imitate a field boundary.
  std::string text = k_encoding_version;
  text += '\n';
  for (auto& [key, value] : fields) {
    text += key;
    text += ' ';
    text += std::to_string(value.size());
    text += ':';
    text += value;
    text += '\n';
  }
  return sha256_hex(text);
}

std::vector<std::string> describe_changes(const FingerprintFields& before,
                                          const FingerprintFields& after) {
  std::vector<std::string> out;
  auto value = [](const FingerprintFields& f, const std::string& key) -> const std::string* {
    for (auto& [k, v] : f)
      if (k == key)
        return &v;
    return nullptr;
  };
  for (auto& [key, v] : after) {
    const std::string* old = value(before, key);
    if (old && *old == v)
      continue;
    std::string what = key == "width" || key == "height" ? "size"
                       : key == "negative_prompt"        ? "negative prompt"
                       : key == "params"                 ? "parameters"
                                                         : key;
    if (std::find(out.begin(), out.end(), what + " changed") == out.end())
      out.push_back(what + " changed");
  }
  return out;
}

} // namespace kiln::host
