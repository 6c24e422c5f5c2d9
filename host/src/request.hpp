// Making an asset's request what the model is asked: the enhancers' prompts, the hints the
// postprocessors need in the prompt, and what the backend predicts it costs. Deterministic (the
// SDK's contract for enhancers), so a request made again matches its fingerprint.
#pragma once

#include "workspace.hpp"

#include <optional>
#include <string>

namespace kiln::host {

// Runs the asset's enhancers in order, for the request's model, then adds the postprocessors'
// prompt hints. A failure names the plugin.
std::optional<Fault> enhance(Workspace& ws, const AssetSpec& spec, GenerationRequest& req);

// Appends what the asset's postprocessors need the model to paint (their prompt hints: a plain
// backdrop to remove, say) to the prompt, unless it already says it: the model is asked for
// what the postprocessing expects, whatever the enhancers or a strategy made of the prompt.
std::optional<Fault> add_prompt_hints(Workspace& ws, const AssetSpec& spec, GenerationRequest& req);

// What `req` is predicted to cost on its backend (0 when the backend does not say).
double predict_cost(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                    const std::string& fingerprint);

// What the asset's output is checked by: validator ids, versions and manifest options, hashed.
std::string checks_of(const Workspace& ws, const AssetSpec& spec);

} // namespace kiln::host
