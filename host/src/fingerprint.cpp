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
  FingerprintFields fields{
      {"backend", r.backend + "@" + r.backend_version + r.backend_options},
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
  // Only when there are postprocessors: an asset without any keeps the fingerprint it had
  // before they existed, so nothing paid for is made again.
  if (!r.postprocess.empty())
    fields.emplace_back("postprocess", join(r.postprocess, "\x1e"));
  return fields;
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

std::string source_fingerprint_of(const GenerationRequest& request) {
  GenerationRequest model_only = request;
  model_only.postprocess.clear();
  return fingerprint_of(fingerprint_fields(model_only));
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
  auto note = [&](const std::string& key) {
    std::string what = key == "width" || key == "height" ? "size"
                       : key == "negative_prompt"        ? "negative prompt"
                       : key == "params"                 ? "parameters"
                       : key == "postprocess"            ? "postprocessing"
                                                         : key;
    if (std::find(out.begin(), out.end(), what + " changed") == out.end())
      out.push_back(what + " changed");
  };
  for (auto& [key, v] : after) {
    const std::string* old = value(before, key);
    if (!old || *old != v)
      note(key);
  }
  for (auto& [key, v] : before) // a field only the old request had (its postprocessors)
    if (!value(after, key))
      note(key);
  return out;
}

std::optional<Digest> digest_of_hex(std::string_view hex) {
  if (hex.size() != 64)
    return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  Digest d;
  for (size_t i = 0; i < d.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    d[i] = uint8_t(hi << 4 | lo);
  }
  return d;
}

std::string hex_of(const Digest& d) {
  static const char k_digits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = k_digits[d[i] >> 4];
    out[2 * i + 1] = k_digits[d[i] & 15];
  }
  return out;
}

} // namespace kiln::host
