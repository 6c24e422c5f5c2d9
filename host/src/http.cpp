#include "http.hpp"

#include "version.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <curl/curl.h>
#include <memory>
#include <mutex>

namespace kiln::host {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string_view::npos ? std::string() : std::string(s.substr(b, e - b + 1));
}

// Where the body goes: memory or a file, with the size cap enforced as it arrives.
struct Sink {
  std::string* memory = nullptr;
  std::FILE* file = nullptr;
  uint64_t max_bytes = 0;
  uint64_t written = 0;
  bool too_large = false;
  bool write_failed = false;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  size_t n = size * count;
  if (sink->written + n > sink->max_bytes) {
    sink->too_large = true;
    return 0; // aborts the transfer
  }
  if (sink->file) {
    if (std::fwrite(data, 1, n, sink->file) != n) {
      sink->write_failed = true;
      return 0;
    }
  } else {
    sink->memory->append(data, n);
  }
  sink->written += n;
  return n;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<HttpHeaders*>(user);
  std::string_view line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) {
    headers->clear(); // a new response (after a redirect or 100-continue): keep only the last
  } else if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    headers->emplace_back(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
  }
  return size * count;
}

kiln_error_category category_of(CURLcode code) {
  switch (code) {
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return KILN_ERROR_RETRYABLE;
  default:
    return KILN_ERROR_PERMANENT;
  }
}

// The URL without its query and fragment: query strings may carry signatures or tokens.
std::string safe_url(std::string_view url) {
  if (url.rfind("data:", 0) == 0)
    return "data: URI";
  size_t cut = url.find_first_of("?#");
  return std::string(url.substr(0, cut));
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(uint8_t(s[i + 1])) &&
        std::isxdigit(uint8_t(s[i + 2]))) {
      out += char(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

} // namespace

std::string HttpResponse::header(std::string_view name) const {
  std::string key = lower(std::string(name));
  for (auto it = headers.rbegin(); it != headers.rend(); ++it)
    if (it->first == key)
      return it->second;
  return {};
}

Result<std::string> decode_data_uri(std::string_view uri) {
  size_t comma = uri.find(',');
  if (uri.rfind("data:", 0) != 0 || comma == std::string_view::npos)
    return Fault{KILN_ERROR_PERMANENT, "malformed data: URI", -1};
  std::string_view meta = uri.substr(5, comma - 5), data = uri.substr(comma + 1);
  bool base64 = meta.size() >= 7 && meta.substr(meta.size() - 7) == ";base64";
  if (!base64)
    return percent_decode(data);
  std::string out;
  out.reserve(data.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : data) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ')
      continue;
    int v = base64_value(c);
    if (v < 0)
      return Fault{KILN_ERROR_PERMANENT, "data: URI has invalid base64", -1};
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

HttpClient::HttpClient(Log& log) : m_log(log) {
  global_init();
}

std::string HttpClient::user_agent() {
  return std::string("kiln/") + k_kiln_version;
}

namespace {

// A `data:` URI answered without a transfer: its bytes, as a 200 response's body.
Result<HttpResponse> answer_data_uri(const HttpRequest& req, Sink& sink, std::FILE* file,
                                     HttpResponse& response) {
  auto bytes = decode_data_uri(req.url);
  if (!bytes)
    return bytes.error();
  if (bytes->size() > req.max_bytes)
    return Fault{KILN_ERROR_PERMANENT,
                 "data: URI holds more than " + std::to_string(req.max_bytes) + " bytes", -1};
  on_body(bytes->data(), 1, bytes->size(), &sink);
  response.status = 200;
  response.body_bytes = sink.written;
  if (file && std::fflush(file) != 0)
    return Fault{KILN_ERROR_PERMANENT, "cannot write '" + req.output_path.string() + "'", -1};
  return std::move(response);
}

// What the transfer sends: method, URL, body, headers and User-Agent.
void set_request(CURL* c, const HttpRequest& req, curl_slist* headers, const std::string& agent) {
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  if (req.method == "HEAD")
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  if (!req.body.empty() || req.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(req.body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_USERAGENT, agent.c_str());
  if (!req.aws_sigv4.empty()) {
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, req.aws_sigv4.c_str());
    curl_easy_setopt(c, CURLOPT_USERPWD, req.credentials.c_str());
  }
}

// How every transfer goes: its timeouts, redirects and encodings.
void set_policy(CURL* c, const HttpRequest& req) {
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, long(req.timeout_ms));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, long(req.connect_timeout_ms));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); // worker threads: no SIGALRM for timeouts
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); // whatever libcurl can decode
  // TLS peer and host verification are libcurl's defaults and are never turned off here.
}

// A failed transfer's message. libcurl's may repeat the URL: known secrets are redacted and
// the query string dropped.
std::string transfer_failure(const Log& log, const HttpRequest& req, const std::string& what,
                             CURLcode code, const char* error_buffer, uint64_t received) {
  std::string detail = *error_buffer ? error_buffer : curl_easy_strerror(code);
  if (code == CURLE_PARTIAL_FILE)
    detail = "the response was truncated (" + std::to_string(received) + " bytes received)";
  std::string message = log.redact(what + ": " + detail);
  if (size_t q = req.url.find('?'); q != std::string::npos)
    for (size_t pos = message.find(req.url.substr(q)); pos != std::string::npos;
         pos = message.find(req.url.substr(q)))
      message.erase(pos, req.url.size() - q);
  return message;
}

} // namespace

Result<HttpResponse> HttpClient::send(const HttpRequest& req) const {
  HttpResponse response;
  Sink sink;
  sink.max_bytes = req.max_bytes;
  sink.memory = &response.body;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(nullptr, &std::fclose);
  if (!req.output_path.empty()) {
    file.reset(std::fopen(req.output_path.c_str(), "wb"));
    if (!file)
      return Fault{KILN_ERROR_PERMANENT, "cannot create '" + req.output_path.string() + "'", -1};
    sink.file = file.get();
  }
  std::string what = req.method + " " + safe_url(req.url);
  if (req.url.rfind("data:", 0) == 0)
    return answer_data_uri(req, sink, file.get(), response);

  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl)
    return Fault{KILN_ERROR_RETRYABLE, "cannot start an HTTP transfer", -1};
  struct curl_slist* header_list = nullptr;
  for (auto& [name, value] : req.headers)
    header_list = curl_slist_append(header_list, (name + ": " + value).c_str());
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(header_list, &curl_slist_free_all);
  char error_buffer[CURL_ERROR_SIZE] = "";
  std::string agent = user_agent();

  CURL* c = curl.get();
  set_request(c, req, headers.get(), agent);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &response.headers);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  set_policy(c, req);

  CURLcode code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  response.body_bytes = sink.written;
  if (file && std::fflush(file.get()) != 0)
    sink.write_failed = true;

  if (sink.too_large)
    return Fault{KILN_ERROR_PERMANENT,
                 what + ": response larger than " + std::to_string(req.max_bytes) + " bytes", -1};
  if (sink.write_failed)
    return Fault{KILN_ERROR_PERMANENT, "cannot write '" + req.output_path.string() + "'", -1};
  if (code != CURLE_OK)
    return Fault{category_of(code),
                 transfer_failure(m_log, req, what, code, error_buffer, sink.written), -1};
  m_log.debug("http: " + what + " -> " + std::to_string(response.status) + " (" +
              std::to_string(response.body_bytes) + " bytes)");
  return response;
}

} // namespace kiln::host
