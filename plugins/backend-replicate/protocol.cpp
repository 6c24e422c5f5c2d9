#include "protocol.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace kiln::replicate {

namespace {

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool is_name_part(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::string string_of(const rapidjson::Value& v) {
  return v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : std::string();
}

const rapidjson::Value* member(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject())
    return nullptr;
  auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

struct FluxRatio {
  const char* name;
  uint32_t width, height; // at megapixels "1"
};
// From replicate/cog-flux: the sizes each aspect ratio gives at one megapixel.
constexpr FluxRatio k_flux_ratios[] = {
    {"1:1", 1024, 1024}, {"16:9", 1344, 768}, {"21:9", 1536, 640}, {"3:2", 1216, 832},
    {"2:3", 832, 1216},  {"4:5", 896, 1088},  {"5:4", 1088, 896},  {"3:4", 896, 1152},
    {"4:3", 1152, 896},  {"9:16", 768, 1344}, {"9:21", 640, 1536},
};

} // namespace

std::optional<ModelRef> parse_model_ref(std::string_view text) {
  ModelRef ref;
  std::string_view name = text;
  if (auto colon = text.find(':'); colon != std::string_view::npos) {
    name = text.substr(0, colon);
    ref.version = std::string(text.substr(colon + 1));
    if (!is_hex64(ref.version))
      return std::nullopt;
  } else if (is_hex64(text)) {
    ref.version = std::string(text);
    return ref;
  }
  auto slash = name.find('/');
  if (slash == std::string_view::npos || !is_name_part(name.substr(0, slash)) ||
      !is_name_part(name.substr(slash + 1)))
    return std::nullopt;
  ref.name = std::string(name);
  return ref;
}

Family family_of(const ModelRef& model) {
  if (model.name == k_flux_schnell)
    return Family::Flux;
  if (model.name == k_sdxl || (model.name.empty() && model.version == k_sdxl_version))
    return Family::Sdxl;
  return Family::Other;
}

FluxShape flux_shape(uint32_t width, uint32_t height) {
  double want = std::log(double(width) / double(height));
  const FluxRatio* best = &k_flux_ratios[0];
  for (auto& r : k_flux_ratios)
    if (std::fabs(std::log(double(r.width) / r.height) - want) <
        std::fabs(std::log(double(best->width) / best->height) - want))
      best = &r;
  FluxShape shape{best->name, "1", best->width, best->height};
  if (best->width / 2 >= width && best->height / 2 >= height)
    shape = {best->name, "0.25", best->width / 2, best->height / 2};
  return shape;
}

std::pair<uint32_t, uint32_t> sdxl_size(uint32_t width, uint32_t height) {
  double scale = std::sqrt(1024.0 * 1024.0 / (double(width) * double(height)));
  auto side = [&](uint32_t v) {
    return std::max<uint32_t>(8, uint32_t(std::lround(double(v) * scale / 8.0)) * 8);
  };
  return {side(width), side(height)};
}

int requested_outputs(const Request& request) {
  rapidjson::Document params;
  params.Parse<rapidjson::kParseIterativeFlag>(request.params_json.data(),
                                               request.params_json.size());
  if (auto* n = params.HasParseError() ? nullptr : member(params, "num_outputs"))
    if (n->IsInt() && n->GetInt() > 0)
      return n->GetInt();
  return 1;
}

std::string input_json(const Request& request, Family family) {
  rapidjson::Document input(rapidjson::kObjectType);
  auto& alloc = input.GetAllocator();
  auto set = [&](const char* name, rapidjson::Value value) {
    input.RemoveMember(name);
    input.AddMember(rapidjson::StringRef(name), value, alloc);
  };
  auto text = [&](std::string_view s) {
    return rapidjson::Value(s.data(), rapidjson::SizeType(s.size()), alloc);
  };

  set("prompt", text(request.prompt));
  if (request.seed)
    set("seed", rapidjson::Value(uint64_t(*request.seed)));
  if (family == Family::Flux) {
    FluxShape shape = flux_shape(request.width, request.height);
    set("aspect_ratio", text(shape.aspect_ratio));
    set("megapixels", text(shape.megapixels));
    // Ask for the declared format when flux-schnell has it, so nothing is re-compressed twice.
    std::string_view format =
        request.format == "jpg" || request.format == "png" ? request.format : "webp";
    set("output_format", text(format));
  } else if (family == Family::Sdxl) {
    auto [w, h] = sdxl_size(request.width, request.height);
    set("width", rapidjson::Value(w));
    set("height", rapidjson::Value(h));
    if (!request.negative_prompt.empty())
      set("negative_prompt", text(request.negative_prompt));
  }

  if (!request.params_json.empty()) {
    rapidjson::Document params(&alloc);
    params.Parse<rapidjson::kParseIterativeFlag>(request.params_json.data(),
                                                 request.params_json.size());
    if (params.HasParseError() || !params.IsObject())
      throw Error("the asset's params are not a JSON object");
    for (auto& m : params.GetObject()) {
      std::string name(m.name.GetString(), m.name.GetStringLength());
      input.RemoveMember(name.c_str());
      input.AddMember(rapidjson::Value(name.c_str(), alloc), rapidjson::Value(m.value, alloc),
                      alloc);
    }
  }
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  input.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

PriceTable default_prices() {
  // Replicate's published prices (replicate.com/pricing): flux-schnell per output image; SDXL per
  // second of compute on an A40 (Large), about 11 s a run.
  PriceTable t;
  t[std::string(k_flux_schnell)] = {Price::PerImage, 0.003, 0};
  t[std::string(k_sdxl)] = {Price::PerSecond, 0.000725, 11};
  return t;
}

void add_price(PriceTable& table, std::string_view entry) {
  auto bad = [&](const std::string& why) {
    return Error("price '" + std::string(entry) + "': " + why +
                 " (write \"owner/name: 0.003 per image\" or \"owner/name: 0.000725 per second, "
                 "11 s typical\")");
  };
  auto colon = entry.find(": ");
  if (colon == std::string_view::npos)
    throw bad("no ': ' after the model");
  std::string model(trim(entry.substr(0, colon)));
  if (!parse_model_ref(model))
    throw bad("'" + model + "' is not a model reference");
  std::string rest(trim(entry.substr(colon + 2)));
  char* end = nullptr;
  double usd = std::strtod(rest.c_str(), &end);
  if (end == rest.c_str() || !(usd >= 0))
    throw bad("no price in dollars");
  std::string_view unit = trim(std::string_view(end));
  Price p{Price::PerImage, usd, 0};
  if (unit == "per image") {
    table[model] = p;
    return;
  }
  constexpr std::string_view per_second = "per second";
  if (unit.substr(0, per_second.size()) != per_second)
    throw bad("the unit must be 'per image' or 'per second'");
  p.unit = Price::PerSecond;
  unit = trim(unit.substr(per_second.size()));
  if (unit.empty())
    throw bad("a per-second price needs the typical run time: ', 11 s typical'");
  std::string typical(unit.front() == ',' ? trim(unit.substr(1)) : unit);
  p.typical_s = std::strtod(typical.c_str(), &end);
  if (end == typical.c_str() || !(p.typical_s > 0) || trim(std::string_view(end)) != "s typical")
    throw bad("cannot read the typical run time");
  table[model] = p;
}

const Price* find_price(const PriceTable& table, const ModelRef& model) {
  for (const std::string& key : {model.name, model.name + ":" + model.version, model.version})
    if (auto it = table.find(key); !key.empty() && it != table.end())
      return &it->second;
  if (model.name.empty() && model.version == k_sdxl_version)
    if (auto it = table.find(k_sdxl); it != table.end())
      return &it->second;
  return nullptr;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "[::1]")
    return true;
  // 127.a.b.c, digits only: "127.0.0.1.evil.example" is somebody else's.
  int parts = 0;
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = host.find('.', start);
    std::string_view part =
        host.substr(start, dot == std::string_view::npos ? host.npos : dot - start);
    if (part.empty() || part.size() > 3 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    if (parts == 0 && part != "127")
      return false;
    ++parts;
    if (dot == std::string_view::npos)
      break;
    start = dot + 1;
  }
  return parts == 4;
}

std::optional<std::string> base_url_problem(std::string_view url, std::string* host_out) {
  std::string_view rest;
  bool https = url.rfind("https://", 0) == 0;
  if (https)
    rest = url.substr(8);
  else if (url.rfind("http://", 0) == 0)
    rest = url.substr(7);
  else
    return "must start with https:// (http:// only for a server on this machine)";
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos)
    return "must not hold a user name or password";
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[')
    host = host.substr(0, host.find(']') + 1);
  else
    host = host.substr(0, host.find(':'));
  if (host.empty())
    return "has no host";
  if (host_out)
    *host_out = std::string(host);
  bool loopback = is_loopback_host(host);
  if (!https && !loopback)
    return "uses plain http:// to " + std::string(host) +
           ", which would send the API token unencrypted: use https:// (http:// only for a "
           "server on this machine)";
  return std::nullopt;
}

std::optional<std::string> token_env_problem(std::string_view name) {
  bool ours = name.find("REPLICATE") != std::string_view::npos || name.rfind("KILN_", 0) == 0;
  bool shape = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
  if (ours && shape)
    return std::nullopt;
  return "'" + std::string(name) +
         "' is not a Replicate token variable: token_env must contain REPLICATE or start with "
         "KILN_ (upper case), so a manifest cannot send another secret of your environment";
}

bool valid_prediction_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  });
}

std::optional<Prediction> parse_prediction(std::string_view body) {
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject())
    return std::nullopt;
  Prediction p;
  if (auto* v = member(d, "id"))
    p.id = string_of(*v);
  if (auto* v = member(d, "status"))
    p.status = string_of(*v);
  // An id goes into URLs and the journal: only what Replicate's ids are made of.
  if (!valid_prediction_id(p.id) || p.status.empty())
    return std::nullopt;
  if (auto* v = member(d, "error"))
    p.error = string_of(*v);
  if (auto* v = member(d, "output")) {
    if (v->IsArray()) {
      for (auto& item : v->GetArray())
        if (item.IsString())
          p.output.push_back(string_of(item));
    } else if (v->IsString()) {
      p.output.push_back(string_of(*v));
    }
  }
  if (auto* v = member(d, "data_removed"))
    p.data_removed = v->IsBool() && v->GetBool();
  if (auto* metrics = member(d, "metrics"))
    if (auto* t = member(*metrics, "predict_time"); t && t->IsNumber())
      p.predict_time_s = t->GetDouble();
  if (auto* urls = member(d, "urls")) {
    if (auto* v = member(*urls, "get"))
      p.get_url = string_of(*v);
    if (auto* v = member(*urls, "cancel"))
      p.cancel_url = string_of(*v);
  }
  return p;
}

CreateAnswer classify_create_answer(int status, std::string_view body) {
  if (status >= 200 && status < 300) {
    if (parse_prediction(body))
      return CreateAnswer::Created;
    // A prediction whose id is not Replicate's (a hostile or broken server): it was created,
    // but can never be followed; creating again would only pay again.
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
    if (!d.HasParseError() && d.IsObject())
      if (auto* id = member(d, "id"); id && id->IsString() && id->GetStringLength() > 0)
        return CreateAnswer::BadId;
    return CreateAnswer::Unknown;
  }
  if (status == 0 || status == 408 || status >= 500)
    return CreateAnswer::Unknown;
  return CreateAnswer::Refused;
}

std::optional<std::string> find_lost_prediction(std::string_view list_body, const ModelRef& model,
                                                std::string_view input_json,
                                                const LostSearch& search) {
  rapidjson::Document list, input;
  list.Parse<rapidjson::kParseIterativeFlag>(list_body.data(), list_body.size());
  input.Parse<rapidjson::kParseIterativeFlag>(input_json.data(), input_json.size());
  const rapidjson::Value* results = list.HasParseError() ? nullptr : member(list, "results");
  if (!results || !results->IsArray() || input.HasParseError())
    return std::nullopt;
  for (auto& p : results->GetArray()) {
    const rapidjson::Value* in = member(p, "input");
    std::string status = member(p, "status") ? string_of(*member(p, "status")) : "";
    std::string name = member(p, "model") ? string_of(*member(p, "model")) : "";
    std::string version = member(p, "version") ? string_of(*member(p, "version")) : "";
    bool same_model = model.official() ? name == model.name : version == model.version;
    auto* removed = member(p, "data_removed");
    if (!in || *in != input || !same_model || status == "failed" || status == "canceled" ||
        status == "aborted" || (removed && removed->IsBool() && removed->GetBool()))
      continue;
    std::string id = member(p, "id") ? string_of(*member(p, "id")) : "";
    if (!valid_prediction_id(id) ||
        std::find(search.exclude.begin(), search.exclude.end(), id) != search.exclude.end())
      continue;
    if (search.created_after) {
      // A result without a readable created_at is kept: paying twice is the worse mistake.
      auto created = parse_iso_time(member(p, "created_at") ? string_of(*member(p, "created_at"))
                                                            : std::string());
      if (created && *created < *search.created_after)
        continue;
    }
    return id;
  }
  return std::nullopt;
}

std::optional<double> parse_iso_time(std::string_view text) {
  std::string s(trim(text));
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest)
    return std::nullopt;
  double seconds = double(timegm(&tm));
  if (*rest == '.') {
    char* end = nullptr;
    double fraction = std::strtod(rest, &end);
    if (end == rest + 1)
      return std::nullopt;
    seconds += fraction;
    rest = end;
  }
  if (*rest == 'Z' || *rest == 'z') {
    ++rest;
  } else if (*rest == '+' || *rest == '-') {
    int hours = 0, minutes = 0, used = 0;
    if (std::sscanf(rest + 1, "%2d:%2d%n", &hours, &minutes, &used) != 2 || used != 5)
      return std::nullopt;
    double offset = hours * 3600.0 + minutes * 60.0;
    seconds -= *rest == '+' ? offset : -offset;
    rest += 1 + used;
  } else {
    return std::nullopt; // no zone: not a time Replicate writes
  }
  if (*rest != '\0')
    return std::nullopt;
  return seconds;
}

std::optional<double> parse_http_date(std::string_view text) {
  std::string h(trim(text));
  std::tm tm{};
  const char* rest = strptime(h.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!rest || *rest != '\0')
    return std::nullopt;
  return double(timegm(&tm));
}

Problem parse_problem(std::string_view body) {
  Problem p;
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject()) {
    std::string_view first = trim(body.substr(0, std::min(body.find('\n'), body.size())));
    p.detail = std::string(first.substr(0, 200));
    return p;
  }
  if (auto* v = member(d, "title"))
    p.title = string_of(*v);
  if (auto* v = member(d, "detail"))
    p.detail = string_of(*v);
  // 422 details list one "- field: problem" per line: one line reads better in a log.
  while (!p.detail.empty() && (p.detail.back() == '\n' || p.detail.back() == ' '))
    p.detail.pop_back();
  for (size_t nl = p.detail.find('\n'); nl != std::string::npos; nl = p.detail.find('\n', nl))
    p.detail.replace(nl, 1, "; ");
  if (auto* v = member(d, "retry_after"); v && v->IsNumber())
    p.retry_after_s = v->GetDouble();
  if (auto* v = member(d, "invalid_fields"); v && v->IsArray())
    for (auto& f : v->GetArray()) {
      std::string field = member(f, "field") ? string_of(*member(f, "field")) : "";
      std::string type = member(f, "type") ? string_of(*member(f, "type")) : "";
      p.invalid_fields.push_back(field + (type.empty() ? "" : " (" + type + ")"));
    }
  return p;
}

int64_t retry_after_ms(const Problem& problem, std::string_view header) {
  // A server's hint is clamped to a day before it becomes an integer: 1e30 or inf must not
  // overflow the conversion.
  constexpr double k_max_s = 86400;
  if (problem.retry_after_s >= 0 && std::isfinite(problem.retry_after_s))
    return int64_t(std::ceil(std::min(problem.retry_after_s, k_max_s) * 1000.0));
  if (problem.retry_after_s >= 0) // inf
    return int64_t(k_max_s * 1000.0);
  header = trim(header);
  if (header.empty())
    return -1;
  std::string h(header);
  char* end = nullptr;
  double seconds = std::strtod(h.c_str(), &end);
  if (end != h.c_str() && *end == '\0' && seconds >= 0)
    return int64_t(std::ceil(std::min(seconds, k_max_s) * 1000.0)); // inf: the cap too
  if (auto date = parse_http_date(h)) {
    double delta = std::min(*date - double(std::time(nullptr)), k_max_s);
    return delta > 0 ? int64_t(delta * 1000.0) : 0;
  }
  return -1;
}

std::string cancel_after(uint32_t seconds) {
  seconds = std::max<uint32_t>(seconds, 5);
  if (seconds % 3600 == 0)
    return std::to_string(seconds / 3600) + "h";
  if (seconds % 60 == 0)
    return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds) + "s";
}

} // namespace kiln::replicate
