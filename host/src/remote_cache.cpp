#include "remote_cache.hpp"

#include "fatal.hpp"
#include "image.hpp"
#include "util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace kiln::host {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

bool hex64(std::string_view s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string record_json(const RemoteRecord& r) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto str = [&](const char* key, const std::string& v) {
    w.Key(key);
    w.String(v.c_str(), rapidjson::SizeType(v.size()));
  };
  w.StartObject();
  str("sha256", r.sha256);
  w.Key("size");
  w.Uint64(r.size);
  str("format", r.format);
  w.Key("width");
  w.Uint(r.width);
  w.Key("height");
  w.Uint(r.height);
  str("backend", r.backend);
  str("model", r.model);
  w.Key("seed");
  if (r.seed)
    w.Uint64(*r.seed);
  else
    w.Null();
  w.Key("cost_usd");
  w.Double(r.cost_usd);
  str("kiln", "1");
  w.EndObject();
  return buf.GetString();
}

} // namespace

std::optional<RemoteRecord> parse_remote_record(const std::string& text) {
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject())
    return std::nullopt;
  auto string = [&](const char* key) -> std::optional<std::string> {
    auto it = d.FindMember(key);
    if (it == d.MemberEnd() || !it->value.IsString())
      return std::nullopt;
    return std::string(it->value.GetString(), it->value.GetStringLength());
  };
  auto number = [&](const char* key) -> std::optional<uint64_t> {
    auto it = d.FindMember(key);
    if (it == d.MemberEnd() || !it->value.IsUint64())
      return std::nullopt;
    return it->value.GetUint64();
  };
  RemoteRecord r;
  auto sha = string("sha256");
  auto format = string("format");
  auto size = number("size"), width = number("width"), height = number("height");
  if (!sha || !hex64(*sha) || !format || !size || !width || !height || *width > UINT32_MAX ||
      *height > UINT32_MAX)
    return std::nullopt;
  r.sha256 = *sha;
  r.format = *format;
  r.size = *size;
  r.width = uint32_t(*width);
  r.height = uint32_t(*height);
  // Provenance goes into kiln.lock: only what kiln.lock can hold, plain and bounded.
  auto plain = [](std::optional<std::string> v) {
    if (!v || v->size() > 256 ||
        std::any_of(v->begin(), v->end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; }))
      return std::string();
    return *v;
  };
  r.backend = plain(string("backend"));
  r.model = plain(string("model"));
  if (auto seed = number("seed"); seed && *seed <= uint64_t(INT64_MAX))
    r.seed = seed;
  if (auto it = d.FindMember("cost_usd"); it != d.MemberEnd() && it->value.IsNumber()) {
    double cost = it->value.GetDouble();
    r.cost_usd = std::isfinite(cost) && cost >= 0 && cost <= 1e4 ? cost : 0.0;
  }
  return r;
}

namespace {

// "s3://bucket/prefix" as a path-style URL of the endpoint (AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL, as the AWS SDKs read them; else AWS's own for the region).
std::string s3_base(std::string_view address, const std::string& region) {
  std::string rest(address.substr(5));
  while (!rest.empty() && rest.back() == '/')
    rest.pop_back();
  std::string endpoint = env("AWS_ENDPOINT_URL_S3");
  if (endpoint.empty())
    endpoint = env("AWS_ENDPOINT_URL");
  if (endpoint.empty())
    endpoint = "https://s3." + region + ".amazonaws.com";
  while (!endpoint.empty() && endpoint.back() == '/')
    endpoint.pop_back();
  return endpoint + "/" + rest;
}

bool timed_out(const std::string& message) {
  return message.find("timed out") != std::string::npos ||
         message.find("Timeout") != std::string::npos;
}

} // namespace

namespace {

bool truthy(const std::string& v) {
  return v == "1" || v == "true" || v == "yes" || v == "on";
}

// The address without a user:password part, for messages.
std::string without_userinfo(const std::string& address) {
  size_t scheme = address.find("://");
  size_t at = address.find('@', scheme == std::string::npos ? 0 : scheme + 3);
  size_t slash = address.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (scheme == std::string::npos || at == std::string::npos || at > slash)
    return address;
  return address.substr(0, scheme + 3) + address.substr(at + 1);
}

// What an address may hold: no query, fragment, space or byte a signature would encode.
bool plain_address(std::string_view address) {
  return address.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-._~:/@[]") == std::string_view::npos;
}

} // namespace

std::unique_ptr<RemoteCache> RemoteCache::open(const RemoteCacheSettings& settings, Log& log,
                                               const HttpClient& http) {
  const char* from_env = std::getenv("KILN_REMOTE_CACHE");
  std::string address = from_env ? from_env : settings.remote;
  const char* what = from_env ? "KILN_REMOTE_CACHE" : "[cache] remote";
  if (address.empty() || address == "off" || address == "none")
    return nullptr; // KILN_REMOTE_CACHE=off turns a manifest's remote off
  std::unique_ptr<RemoteCache> r(new RemoteCache(log, http));
  std::string ro = env("KILN_REMOTE_CACHE_READ_ONLY");
  if (!ro.empty() && !truthy(ro) && ro != "0" && ro != "false" && ro != "no" && ro != "off")
    log.warning("KILN_REMOTE_CACHE_READ_ONLY='" + ro + "' is neither 1 nor 0: read only");
  r->m_read_only = settings.read_only ||
                   (!ro.empty() && ro != "0" && ro != "false" && ro != "no" && ro != "off");
  r->m_timeout_ms = std::max<uint32_t>(1, uint32_t(settings.timeout_s * 1000));
  while (address.size() > 1 && address.back() == '/')
    address.pop_back();
  r->m_where = without_userinfo(address);
  if (r->m_where != address) { // user:password@: the password is a secret like any token
    std::string userinfo = address.substr(address.find("://") + 3);
    userinfo = userinfo.substr(0, userinfo.find('@'));
    if (size_t colon = userinfo.find(':');
        colon != std::string::npos && colon + 1 < userinfo.size())
      log.add_secret(userinfo.substr(colon + 1));
  }
  if (!plain_address(address))
    throw Fatal(std::string(what) + " '" + escape_controls(r->m_where) +
                "' holds characters an address for it cannot (a space, '?', '#', '%', "
                "non-ASCII): use a plain prefix");
  if (address.rfind("http://", 0) == 0 || address.rfind("https://", 0) == 0) {
    r->m_base = address;
    r->m_token = env("KILN_REMOTE_CACHE_TOKEN");
    if (!r->m_token.empty())
      log.add_secret(r->m_token);
  } else if (address.rfind("s3://", 0) == 0 && address.size() > 5 && address[5] != '/') {
    std::string region = env("AWS_REGION");
    if (region.empty())
      region = env("AWS_DEFAULT_REGION");
    if (region.empty())
      region = "us-east-1";
    std::string key = env("AWS_ACCESS_KEY_ID"), secret = env("AWS_SECRET_ACCESS_KEY");
    if (key.empty() || secret.empty()) {
      // A machine without the team's credentials (a fork's CI, a laptop) builds locally.
      log.warning("the remote cache " + r->m_where +
                  " needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment: "
                  "building without it");
      return nullptr;
    }
    log.add_secret(secret);
    r->m_session = env("AWS_SESSION_TOKEN");
    if (!r->m_session.empty())
      log.add_secret(r->m_session);
    r->m_base = s3_base(address, region);
    r->m_sigv4 = "aws:amz:" + region + ":s3";
    r->m_keys = key + ":" + secret;
  } else {
    throw Fatal(std::string(what) + " must be an http://, https:// or s3://bucket address, not '" +
                escape_controls(r->m_where) + "'");
  }
  return r;
}

std::string RemoteCache::id() const {
  return sha256_hex(m_base).substr(0, 16);
}

RemoteCounts RemoteCache::counts() const {
  std::lock_guard lock(m_mutex);
  return m_counts;
}

bool RemoteCache::usable() {
  std::lock_guard lock(m_mutex);
  return !m_disabled;
}

std::optional<HttpResponse> RemoteCache::send(const std::string& method, const std::string& path,
                                              std::string body, uint64_t max_bytes) {
  if (!usable())
    return std::nullopt;
  HttpRequest q;
  q.method = method;
  q.url = m_base + path;
  q.max_bytes = max_bytes;
  q.timeout_ms = m_timeout_ms;
  q.connect_timeout_ms = std::min<uint32_t>(m_timeout_ms, 5000);
  if (!m_token.empty())
    q.headers.emplace_back("Authorization", "Bearer " + m_token);
  if (!m_sigv4.empty()) {
    q.aws_sigv4 = m_sigv4;
    q.credentials = m_keys;
    q.headers.emplace_back("x-amz-content-sha256", sha256_hex(body));
    if (!m_session.empty())
      q.headers.emplace_back("x-amz-security-token", m_session);
  }
  size_t sent = body.size();
  q.body = std::move(body);
  auto r = m_http.send(q);
  std::lock_guard lock(m_mutex);
  // A 404 is an answer to a lookup; to a PUT it is an error (S3's NoSuchBucket, say).
  bool ok = r && r->status / 100 == 2;
  if (ok || (r && r->status == 404 && method != "PUT")) {
    m_failures_in_a_row = 0;
    if (ok && method == "GET")
      m_counts.bytes_down += r->body_bytes;
    if (ok && method == "PUT")
      m_counts.bytes_up += sent;
    return std::move(*r);
  }
  ++m_counts.errors;
  std::string why = r ? "HTTP " + std::to_string(r->status) : r.error().message;
  if (!r && timed_out(r.error().message))
    ++m_counts.timeouts;
  m_log.warning("remote cache " + m_where + ": " + method + " " + path + ": " + why);
  if (++m_failures_in_a_row >= 3 && !m_disabled) {
    m_disabled = true;
    m_log.warning("remote cache " + m_where +
                  ": failed 3 times in a row; not used for the rest of this run");
  }
  return std::nullopt;
}

std::optional<RemoteRecord> RemoteCache::find(const std::string& fingerprint) {
  {
    std::lock_guard lock(m_mutex);
    if (auto it = m_found.find(fingerprint); it != m_found.end())
      return it->second; // asked when planning: not asked again when installing
  }
  auto r = send("GET", "/ac/" + fingerprint, {}, 64 << 10);
  if (!r)
    return std::nullopt;
  std::lock_guard lock(m_mutex);
  if (r->status == 404) {
    ++m_counts.misses;
    return std::nullopt;
  }
  auto record = parse_remote_record(r->body);
  if (!record) {
    ++m_counts.corrupt;
    m_bad_records.insert(fingerprint);
    m_log.warning("remote cache " + m_where + ": the record /ac/" + fingerprint +
                  " is not one Kiln wrote: ignored");
    return std::nullopt;
  }
  m_found.emplace(fingerprint, *record);
  return record;
}

bool RemoteCache::has_content(const std::string& sha256) {
  auto r = send("HEAD", "/cas/" + sha256);
  return r && r->status / 100 == 2;
}

std::optional<std::string> RemoteCache::fetch(const std::string& fingerprint,
                                              const std::string& sha256, const CacheExpect& expect,
                                              std::string* why) {
  auto say = [&](std::string text) -> std::optional<std::string> {
    if (why)
      *why = std::move(text);
    return std::nullopt;
  };
  // No more bytes than an image of the asset's size can take (the server's own claims are not
  // trusted): a few bytes a pixel, and room for headers.
  uint64_t most = expect.width && expect.height
                      ? uint64_t(expect.width) * expect.height * 5 + (1u << 20)
                      : 256ull << 20;
  auto r = send("GET", "/cas/" + sha256, {}, most);
  if (!r)
    return say("the remote cache cannot be reached, or its entry is too large");
  if (r->status == 404) {
    std::lock_guard lock(m_mutex);
    ++m_counts.misses;
    return say("its image is missing from the remote cache");
  }
  std::string bytes = std::move(r->body);
  std::string problem;
  auto probe = probe_image(bytes);
  if (sha256_hex(bytes) != sha256)
    problem = "its bytes do not match their digest";
  else if (!expect.sha256.empty() && sha256 != expect.sha256)
    problem = "its bytes are not the ones kiln.lock records";
  else if (!probe || (!expect.format.empty() && probe->format != expect.format) ||
           (expect.width && probe->width != expect.width) ||
           (expect.height && probe->height != expect.height))
    problem = "it is not a " + std::to_string(expect.width) + "x" + std::to_string(expect.height) +
              " " + expect.format + " image";
  std::lock_guard lock(m_mutex);
  if (!problem.empty()) {
    ++m_counts.corrupt;
    // Whoever makes this image next uploads it again, whatever a HEAD says, and its record.
    m_bad_content.insert(sha256);
    m_bad_records.insert(fingerprint);
    m_log.warning("remote cache " + m_where + ": /cas/" + sha256 + " is bad (" + problem +
                  "): not installed");
    return say("the remote cache's entry is bad: " + problem);
  }
  ++m_counts.hits;
  return bytes;
}

bool RemoteCache::store(const std::string& fingerprint, std::string_view bytes,
                        const RemoteRecord& record) {
  if (m_read_only)
    return false;
  std::string path = "/cas/" + record.sha256;
  bool repair;
  {
    std::lock_guard lock(m_mutex);
    repair = m_bad_content.count(record.sha256) > 0;
  }
  if (!repair) {
    auto head = send("HEAD", path);
    if (!head)
      return false;
    repair = head->status == 404;
  }
  if (repair && !send("PUT", path, std::string(bytes)))
    return false;
  // The record last: whoever finds it finds the image it points at. A record already there
  // that points at another image the remote holds stays (the first image made for a request
  // is the team's, and the kiln.lock files that name it keep matching); this one's bytes are
  // in the store all the same, by their digest.
  bool replace;
  {
    std::lock_guard lock(m_mutex);
    replace = m_bad_records.count(fingerprint) > 0;
  }
  if (!replace) {
    auto existing = send("GET", "/ac/" + fingerprint, {}, 64 << 10);
    if (!existing)
      return false;
    auto theirs = existing->status == 404 ? std::nullopt : parse_remote_record(existing->body);
    replace = !theirs || (theirs->sha256 != record.sha256 && !has_content(theirs->sha256));
  }
  if (replace && !send("PUT", "/ac/" + fingerprint, record_json(record)))
    return false;
  std::lock_guard lock(m_mutex);
  ++m_counts.uploads;
  return true;
}

} // namespace kiln::host
