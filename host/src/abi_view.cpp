#include "abi_view.hpp"

namespace kiln::host {

namespace {

std::vector<kiln_str> str_list(const std::vector<std::string>& list) {
  std::vector<kiln_str> out;
  for (auto& s : list)
    out.push_back(ks(s));
  return out;
}

} // namespace

AssetView asset_view(const AssetSpec& s, const std::string* model) {
  AssetView v;
  v.fallback_models = str_list(s.fallback_models);
  v.modifiers = str_list(s.modifiers);
  v.postprocess = str_list(s.postprocess);
  kiln_asset& a = v.asset;
  a.struct_size = sizeof a;
  a.name = ks(s.name);
  a.type = ks(s.type);
  a.prompt = ks(s.prompt);
  a.negative = ks(s.negative);
  a.style = ks(s.style);
  a.backend = ks(s.backend);
  a.model = ks(s.model);
  a.format = ks(s.format);
  a.width = s.width;
  a.height = s.height;
  a.has_seed = s.seed.has_value();
  a.seed = s.seed.value_or(0);
  a.params_json = ks(s.params_json);
  if (model)
    a.model = ks(*model);
  a.fallback_models = v.fallback_models.data();
  a.fallback_model_count = v.fallback_models.size();
  a.modifiers = v.modifiers.data();
  a.modifier_count = v.modifiers.size();
  a.postprocess = v.postprocess.data();
  a.postprocess_count = v.postprocess.size();
  return v;
}

kiln_request request_view(const GenerationRequest& r, const kiln_asset* asset,
                          const std::string& fingerprint, const std::string& work_dir,
                          uint32_t attempt, const std::string& resume_job_id, bool lost_create) {
  kiln_request q{};
  q.struct_size = sizeof q;
  q.asset = asset;
  q.prompt = ks(r.prompt);
  q.negative_prompt = ks(r.negative_prompt);
  q.model = ks(r.model);
  q.width = r.width;
  q.height = r.height;
  q.format = ks(r.format);
  q.has_seed = r.seed.has_value();
  q.seed = r.seed.value_or(0);
  q.params_json = ks(r.params_json);
  q.fingerprint = ks(fingerprint);
  q.work_dir = ks(work_dir);
  q.resume_job_id = ks(resume_job_id);
  q.attempt = attempt;
  q.backend = ks(r.backend);
  q.lost_create = lost_create;
  return q;
}

} // namespace kiln::host
