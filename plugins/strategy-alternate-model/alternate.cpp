// The `alternate-model` retry strategy: the next model of the asset's `fallback_models`
// (flux-schnell → SDXL, say) after a content refusal, a permanent error, a retryable failure the
// strategies before it gave up on (or a model cooling down), or repeated validation failures.
// The backend maps the request to the new model's inputs (size, aspect ratio, negative prompt);
// the asset's `params` are model-specific and dropped unless `keep_params` is set.
#include <algorithm>
#include <kiln/kiln.hpp>
#include <string>

namespace {

class AlternateModel : public kiln::RetryStrategy {
public:
  explicit AlternateModel(const kiln::Context& context)
      : m_after_validation(context.options().get_int("after_validation_failures")),
        m_keep_params(context.options().get_bool("keep_params")) {}

  static kiln::OptionSchema options() {
    return {
        {"after_validation_failures", "validation failures in a row before changing model",
         KILN_OPTION_INT, "3"},
        {"keep_params", "send the asset's params to the new model too", KILN_OPTION_BOOL, "false"},
    };
  }

  std::optional<kiln::Proposal> propose(const kiln::Failure& failure) override {
    if (failure.category == KILN_ERROR_VALIDATION &&
        failure.category_streak < uint64_t(m_after_validation))
      return std::nullopt;
    const auto& models = failure.request.asset.fallback_models;
    auto here = std::find(models.begin(), models.end(), failure.request.model);
    auto next = here == models.end() ? models.begin() : here + 1;
    while (next != models.end() && *next == failure.request.model)
      ++next;
    if (next == models.end())
      return std::nullopt;
    kiln::Proposal p;
    p.model = std::string(*next);
    if (!m_keep_params)
      p.params_json = "{}";
    return p;
  }

private:
  int64_t m_after_validation;
  bool m_keep_params;
};

} // namespace

KILN_PLUGIN(AlternateModel, "alternate-model", "1.0.0",
            "Retries with the next model of the asset's fallback_models")
