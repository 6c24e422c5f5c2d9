// The remote cache behind the local one (ccache's model): a team's shared store, so that no
// machine pays for an image a teammate or a CI runner already made. Plain HTTP/1.1 GET, PUT and
// HEAD in bazel-remote's layout, under the remote's prefix:
//   /cas/<sha256 of the bytes>   the image;
//   /ac/<fingerprint>            a small JSON record pointing at the CAS entry, with provenance.
// So any PUT/GET server works (bazel-remote with --disable_http_ac_validation, nginx WebDAV,
// a plain object store), and S3-compatible storage ("s3://bucket/prefix", signed with AWS
// Signature Version 4 by libcurl, credentials from the usual AWS environment variables).
//
// Every image read is verified (its bytes hash to their key and are the declared format and
// size) before anything installs it; a bad entry is a miss, reported and counted. A CAS entry
// is uploaded (after a HEAD says it is missing) before the AC record that points at it. A
// remote that fails (refused, timeout, 5xx, 507, a full disk) never fails a build: the run
// goes on locally, counts the failures, and after three in a row stops asking it.
#pragma once

#include "cache.hpp"
#include "http.hpp"
#include "manifest.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

namespace kiln::host {

// What /ac/<fingerprint> says.
struct RemoteRecord {
  std::string sha256;
  uint64_t size = 0;
  std::string format;
  uint32_t width = 0, height = 0;
  // Provenance, as kiln.lock records it.
  std::string backend, model;
  std::optional<uint64_t> seed;
  double cost_usd = 0;
};

// A record as a remote serves it (any bytes: the server is not trusted); nullopt unless it is
// one Kiln wrote (a 64-hex digest, a format, a size).
std::optional<RemoteRecord> parse_remote_record(const std::string& text);

// What a run did with the remote, for the summary, the report and `kiln cache stats`.
struct RemoteCounts {
  uint32_t hits = 0, misses = 0, errors = 0, timeouts = 0, corrupt = 0, uploads = 0;
  uint64_t bytes_down = 0, bytes_up = 0;
};

class RemoteCache {
public:
  // The remote KILN_REMOTE_CACHE names (it overrides the manifest's [cache] remote), or none.
  // KILN_REMOTE_CACHE_READ_ONLY=1 or remote_read_only makes it read only;
  // KILN_REMOTE_CACHE_TOKEN is sent as a bearer token to an HTTP remote, and registered as a
  // secret. Throws Fatal (exit 2) for an address that is neither http(s):// nor s3://, or an
  // s3:// remote without AWS credentials in the environment.
  static std::unique_ptr<RemoteCache> open(const RemoteCacheSettings& settings, Log& log,
                                           const HttpClient& http);

  // The remote, for people: its address without credentials.
  const std::string& where() const { return m_where; }
  bool read_only() const { return m_read_only; }
  // A stable name for this remote: marks of what was uploaded to it live under it locally.
  std::string id() const;

  // The record for `fingerprint`, or nullopt (a miss, or an error: counted).
  std::optional<RemoteRecord> find(const std::string& fingerprint);
  // Whether /cas/<sha256> is there (a HEAD).
  bool has_content(const std::string& sha256);
  // The image /cas/<sha256> (made for `fingerprint`), verified: its digest, `expect` (format,
  // size, kiln.lock's digest); nullopt when it cannot be had or is bad (counted; `why` says
  // which). No more bytes are read than an image of the expected size can take.
  std::optional<std::string> fetch(const std::string& fingerprint, const std::string& sha256,
                                   const CacheExpect& expect, std::string* why = nullptr);
  // Uploads `bytes` as what `fingerprint` made: the CAS entry (unless a HEAD finds it, or this
  // run found it bad), then the AC record, unless one is there pointing at another image the
  // remote holds (the first image of a request stays the team's, so kiln.lock files naming it
  // keep matching). False when the remote failed (counted) or is read only.
  bool store(const std::string& fingerprint, std::string_view bytes, const RemoteRecord& record);

  RemoteCounts counts() const;

private:
  RemoteCache(Log& log, const HttpClient& http) : m_log(log), m_http(http) {}
  // One request to `path` below the prefix. A transport failure or an unexpected status is
  // counted (and three in a row disable the remote for the run); nullopt then.
  std::optional<HttpResponse> send(const std::string& method, const std::string& path,
                                   std::string body = {}, uint64_t max_bytes = 256ull << 20);
  bool usable();

  Log& m_log;
  const HttpClient& m_http;
  std::string m_where;   // as configured, for messages
  std::string m_base;    // URL of the prefix, no trailing '/'
  std::string m_token;   // HTTP bearer token
  std::string m_sigv4;   // S3: "aws:amz:<region>:s3"
  std::string m_keys;    // S3: "<access key>:<secret>"
  std::string m_session; // S3: AWS_SESSION_TOKEN
  bool m_read_only = false;
  uint32_t m_timeout_ms = 10000;

  mutable std::mutex m_mutex;
  RemoteCounts m_counts;
  uint32_t m_failures_in_a_row = 0;
  bool m_disabled = false;
  std::map<std::string, RemoteRecord> m_found; // records found in this run, by fingerprint
  std::set<std::string> m_bad_content;         // digests whose entry was found bad
  std::set<std::string> m_bad_records;         // fingerprints whose record was found bad
};

} // namespace kiln::host
