#include "request.hpp"

#include "abi_view.hpp"
#include "plugin_guard.hpp"

#include <algorithm>
#include <cctype>

namespace kiln::host {

namespace {

bool contains_nocase(std::string_view text, std::string_view part) {
  auto lower = [](char c) {
    return char(std::tolower(static_cast<unsigned char>(c)));
  };
  return std::search(text.begin(), text.end(), part.begin(), part.end(),
                     [&](char a, char b) { return lower(a) == lower(b); }) != text.end();
}

// Appends each comma-separated phrase of `hint` the prompt does not already say.
void append_phrases(std::string& prompt, std::string_view hint) {
  // Phrase by phrase, each once: a type whose style already says "seamless tileable texture" is
  // not told so twice.
  while (!hint.empty()) {
    size_t comma = hint.find(',');
    std::string_view phrase = hint.substr(0, comma);
    hint = comma == std::string_view::npos ? std::string_view() : hint.substr(comma + 1);
    size_t a = phrase.find_first_not_of(" \t"), b = phrase.find_last_not_of(" \t");
    if (a == std::string_view::npos)
      continue;
    phrase = phrase.substr(a, b - a + 1);
    if (!contains_nocase(prompt, phrase))
      prompt += (prompt.empty() ? "" : ", ") + std::string(phrase);
  }
}

} // namespace

std::optional<Fault> add_prompt_hints(Workspace& ws, const AssetSpec& spec,
                                      GenerationRequest& req) {
  if (spec.postprocess.empty())
    return std::nullopt;
  AssetView view = asset_view(spec, &req.model);
  for (auto& id : spec.postprocess) {
    const PluginInstance& inst = *ws.plugins.postprocessors.at(id);
    auto hint = inst.plugin().table_field(&kiln_postprocessor_functions::prompt_hint);
    if (!hint)
      continue;
    kiln_result r = ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "prompt_hint");
    if (hint(inst.handle(), view.get(), &r) != KILN_OK || r.failed()) {
      Fault f = r.failure();
      f.message = "postprocessor '" + id + "' gave no prompt hint: " + f.message;
      return f;
    }
    append_phrases(req.prompt, r.prompt ? std::string_view(*r.prompt) : std::string_view());
  }
  return std::nullopt;
}

std::optional<Fault> enhance(Workspace& ws, const AssetSpec& spec, GenerationRequest& req) {
  AssetView view = asset_view(spec, &req.model);
  req.enhancers.clear();
  for (auto& id : spec.enhancers) {
    const PluginInstance& inst = *ws.plugins.enhancers.at(id);
    kiln_result r = ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "enhance");
    kiln_status st = inst.plugin().enhancer()->enhance(inst.handle(), view.get(), ks(req.prompt),
                                                       ks(req.negative_prompt), &r);
    if (st != KILN_OK || r.failed()) {
      Fault f = r.failure();
      f.message = plugin_failure("enhancer", id, "enhance", "failed", f.message);
      return f;
    }
    if (r.prompt)
      req.prompt = *r.prompt;
    if (r.negative_prompt)
      req.negative_prompt = *r.negative_prompt;
    req.enhancers.push_back(inst.plugin().id_version());
  }
  return add_prompt_hints(ws, spec, req);
}

std::string checks_of(const Workspace& ws, const AssetSpec& spec) {
  std::string text;
  for (auto& id : spec.validators)
    text += ws.plugins.validators.at(id)->signature();
  return sha256_hex(text);
}

double predict_cost(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                    const std::string& fingerprint) {
  auto it = ws.plugins.backends.find(req.backend);
  if (it == ws.plugins.backends.end())
    return 0;
  const PluginInstance& backend = *it->second;
  auto estimate = backend.plugin().backend()->estimate_cost_usd;
  if (!estimate)
    return 0;
  AssetView view = asset_view(spec, &req.model);
  kiln_request q = request_view(req, view.get(), fingerprint, "");
  PluginCall call(backend.plugin().path.string(), backend.plugin().id, "estimate_cost_usd");
  double usd = estimate(backend.handle(), &q);
  return usd > 0 ? usd : 0;
}

} // namespace kiln::host
