// The `adjust-parameters` retry strategy: after a validation failure or a content refusal, the
// same prompt with another seed (safety-filter false positives and black frames usually pass
// with another seed) and, after a validation failure, more inference steps when the asset's
// params set them. Seeds come from the request's fingerprint, so a rerun makes the same choices.
#include <algorithm>
#include <cmath>
#include <kiln/kiln.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <string>

namespace {

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

class AdjustParameters : public kiln::RetryStrategy {
public:
  explicit AdjustParameters(const kiln::Context& context)
      : m_max_tries(context.options().get_int("max_tries")),
        m_steps_param(context.options().get_string("steps_param")),
        m_max_steps(context.options().get_int("max_steps")),
        m_steps_factor(context.options().get_float("steps_factor")) {
    if (m_steps_factor < 1)
      throw kiln::Error("steps_factor must be at least 1");
  }

  static kiln::OptionSchema options() {
    return {
        {"max_tries", "adjusted retries per asset", KILN_OPTION_INT, "2"},
        {"steps_param", "the params key holding the number of inference steps", KILN_OPTION_STRING,
         "num_inference_steps"},
        {"max_steps", "never ask for more steps than this", KILN_OPTION_INT, "50"},
        {"steps_factor", "steps are multiplied by this after a validation failure",
         KILN_OPTION_FLOAT, "1.5"},
    };
  }

  std::optional<kiln::Proposal> propose(const kiln::Failure& failure) override {
    if (failure.category != KILN_ERROR_VALIDATION && failure.category != KILN_ERROR_CONTENT_POLICY)
      return std::nullopt;
    if (failure.proposals >= uint64_t(m_max_tries))
      return std::nullopt;
    const kiln::Request& r = failure.request;
    kiln::Proposal p;
    // Seeds below 2^31: every provider takes them.
    uint64_t seed = mix(hash(r.fingerprint) + failure.proposals + 1) & 0x7fffffffu;
    if (r.seed && seed == *r.seed)
      seed = (seed + 1) & 0x7fffffffu;
    p.seed = seed;
    if (failure.category == KILN_ERROR_VALIDATION)
      p.params_json = more_steps(r.params_json);
    return p;
  }

private:
  // The params with more steps, or nullopt when they set none (or are at the maximum).
  std::optional<std::string> more_steps(std::string_view params_json) const {
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseIterativeFlag>(params_json.data(), params_json.size());
    if (doc.HasParseError() || !doc.IsObject())
      return std::nullopt;
    auto it = doc.FindMember(m_steps_param.c_str());
    if (it == doc.MemberEnd() || !it->value.IsInt64())
      return std::nullopt;
    int64_t steps = it->value.GetInt64();
    int64_t more =
        std::min<int64_t>(m_max_steps, int64_t(std::ceil(double(steps) * m_steps_factor)));
    if (more <= steps)
      return std::nullopt;
    it->value.SetInt64(more);
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    doc.Accept(w);
    return std::string(buf.GetString(), buf.GetSize());
  }

  int64_t m_max_tries;
  std::string m_steps_param;
  int64_t m_max_steps;
  double m_steps_factor;
};

} // namespace

KILN_PLUGIN(AdjustParameters, "adjust-parameters", "1.0.0",
            "Retries a rejected or refused image with another seed (and more steps)")
