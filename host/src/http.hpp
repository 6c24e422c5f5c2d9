// The host's HTTP client, offered to plugins as a service: one place owns timeouts, TLS
// verification, proxies (libcurl's standard environment variables), the User-Agent, size caps,
// streaming to files and the error category of every transport failure. `data:` URIs are
// answered here too, since providers return them in place of download URLs.
#pragma once

#include "log.hpp"
#include "result.hpp"
#include "util.hpp"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln::host {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  HttpHeaders headers;
  std::string body;
  // When set, the response body is streamed to this file instead of kept in memory.
  fs::path output_path;
  uint64_t max_bytes = 64ull << 20;
  uint32_t timeout_ms = 60000;
  uint32_t connect_timeout_ms = 10000;
  // AWS Signature Version 4 (S3 and compatible stores): libcurl signs the request with
  // `aws_sigv4` ("aws:amz:<region>:s3") and `credentials` ("<access key>:<secret>").
  std::string aws_sigv4;
  std::string credentials;
};

struct HttpResponse {
  long status = 0;
  HttpHeaders headers; // names lowercased, in the order received
  std::string body;    // empty when streamed to output_path
  uint64_t body_bytes = 0;

  // The last value of a header (case-insensitive), or "" when absent.
  std::string header(std::string_view name) const;
};

class HttpClient {
public:
  explicit HttpClient(Log& log);

  // Sends one request; no retries (the host's retry layer decides). A response with any status
  // is a success here; transport failures come back categorised: timeouts, refused or reset
  // connections and truncated bodies are retryable; bad URLs, TLS failures and bodies over
  // max_bytes are permanent. Messages never contain the request's headers.
  Result<HttpResponse> send(const HttpRequest& request) const;

  static std::string user_agent();

private:
  Log& m_log;
};

// Decodes a `data:[<mediatype>][;base64],<data>` URI.
Result<std::string> decode_data_uri(std::string_view uri);

} // namespace kiln::host
