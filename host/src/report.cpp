#include "report.hpp"

#include "fatal.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

namespace kiln::host {

namespace {

using JsonWriter = rapidjson::PrettyWriter<rapidjson::StringBuffer>;

void write_string(JsonWriter& w, const std::string& v) {
  w.String(v.c_str(), rapidjson::SizeType(v.size()));
}

// A string, or null when it is empty.
void write_string_or_null(JsonWriter& w, const std::string& v) {
  if (v.empty())
    w.Null();
  else
    write_string(w, v);
}

// `json` with `pad` after every line break, to sit inside an enclosing object.
std::string indented(const char* json, const char* pad) {
  std::string out;
  for (const char* c = json; *c; ++c) {
    out += *c;
    if (*c == '\n')
      out += pad;
  }
  return out;
}

// One attempt of an asset's "attempts".
void write_attempt(JsonWriter& w, const AttemptRecord& t) {
  auto str = [&](const std::string& v) {
    write_string(w, v);
  };
  // The failure's fields are null for the attempt that made the asset.
  auto failure = [&](const std::string& v) {
    if (t.error)
      str(v);
    else
      w.Null();
  };
  w.StartObject();
  w.Key("strategy");
  str(t.strategy);
  w.Key("backend");
  str(t.backend);
  w.Key("model");
  str(t.model);
  w.Key("prompt");
  str(t.prompt);
  w.Key("seed");
  if (t.seed)
    w.Uint64(*t.seed);
  else
    w.Null();
  w.Key("waited_s");
  w.Double(t.waited_s);
  w.Key("remote_id");
  str(t.remote_id);
  w.Key("cost_usd");
  w.Double(t.cost_usd);
  w.Key("from_cache");
  w.Bool(t.from_cache);
  w.Key("error_category");
  failure(t.error ? category_name(t.error->category) : "");
  w.Key("error");
  failure(t.error ? t.error->message : "");
  w.Key("source");
  failure(t.source);
  w.Key("decision");
  write_string_or_null(w, t.decision);
  w.Key("decision_reason");
  if (t.decision.empty())
    w.Null();
  else
    str(t.decision_reason);
  w.EndObject();
}

// One entry of the report's "assets", indented to sit in it.
std::string asset_json(const AssetOutcome& o) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.SetIndent(' ', 2);
  auto str = [&](const std::string& v) {
    write_string(w, v);
  };
  auto error_field = [&](const std::string& v) {
    if (o.error)
      str(v);
    else
      w.Null();
  };
  w.StartObject();
  w.Key("name");
  str(o.name);
  w.Key("status");
  str(std::string(status_name(o.status)));
  w.Key("reason");
  str(o.reason);
  w.Key("output");
  str(o.output.string());
  w.Key("fingerprint");
  str(o.fingerprint);
  w.Key("backend");
  str(o.backend);
  w.Key("model");
  str(o.model);
  w.Key("fallback");
  w.Bool(o.fallback);
  w.Key("attempts");
  w.StartArray();
  for (auto& t : o.attempts)
    write_attempt(w, t);
  w.EndArray();
  w.Key("remote_id");
  str(o.remote_id);
  w.Key("cost_usd");
  w.Double(o.cost_usd);
  w.Key("predicted_cost_usd");
  w.Double(o.predicted_cost_usd);
  w.Key("prompt");
  str(o.final_prompt);
  w.Key("negative_prompt");
  str(o.final_negative_prompt);
  w.Key("error");
  error_field(o.error ? o.error->message : "");
  w.Key("error_category");
  error_field(o.error ? category_name(o.error->category) : "");
  w.Key("hint");
  write_string_or_null(w, o.hint);
  w.Key("origin");
  write_string_or_null(w, std::string(origin_name(o.origin)));
  w.Key("saved_usd");
  w.Double(o.saved_usd);
  w.EndObject();
  return "    " + indented(buf.GetString(), "    ");
}

// The report's "summary" object, indented to sit in it.
std::string summary_json(const BuildSummary& s) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.SetIndent(' ', 2);
  w.StartObject();
  w.Key("total");
  w.Uint64(s.total);
  w.Key("generated");
  w.Int(s.generated);
  w.Key("cached");
  w.Int(s.cached);
  w.Key("up_to_date");
  w.Int(s.up_to_date);
  w.Key("failed");
  w.Int(s.failed);
  w.Key("skipped");
  w.Int(s.skipped);
  w.Key("fallback");
  w.Int(s.fallbacks());
  w.Key("cost_usd");
  w.Double(s.cost_usd);
  w.Key("predicted_cost_usd");
  w.Double(s.predicted_cost_usd);
  w.Key("duration_s");
  w.Double(s.duration_s);
  w.Key("cache_rejected");
  w.Uint(s.cache_rejected);
  w.Key("kept");
  w.Int(s.kept);
  w.Key("removed");
  w.Uint64(s.removed);
  w.Key("remote");
  w.Int(s.remote);
  w.Key("saved_usd");
  w.Double(s.saved_usd);
  const RemoteCounts& r = s.remote_counts;
  const std::pair<const char*, uint32_t> counts[] = {
      {"remote_hits", r.hits},       {"remote_misses", r.misses},
      {"remote_errors", r.errors},   {"remote_timeouts", r.timeouts},
      {"remote_corrupt", r.corrupt}, {"remote_uploads", r.uploads}};
  for (auto [key, value] : counts) {
    w.Key(key);
    w.Uint(value);
  }
  w.EndObject();
  return indented(buf.GetString(), "  ");
}

} // namespace

ReportWriter::ReportWriter(fs::path path) : m_path(std::move(path)) {
  // Named as the atomic writes' temp files are: a killed run's spool in the output folder is
  // removed by the next build, and one elsewhere is replaced by the next run's. Made anew, never
  // opened through a link planted in its place.
  m_spool = m_path;
  m_spool += ".kiln-tmp.spool";
  std::error_code ec;
  if (!m_path.parent_path().empty())
    fs::create_directories(m_path.parent_path(), ec);
  fs::remove(m_spool, ec); // a link is removed, not followed
  int fd = ::open(m_spool.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  m_file = fd < 0 ? nullptr : ::fdopen(fd, "w+b");
  if (!m_file)
    throw Fatal("cannot write the report's spool '" + m_spool.string() +
                "': " + std::strerror(errno));
}

ReportWriter::~ReportWriter() {
  if (m_file)
    std::fclose(m_file);
  std::error_code ec;
  fs::remove(m_spool, ec);
}

void ReportWriter::add(size_t index, const AssetOutcome& outcome) {
  std::string entry = asset_json(outcome);
  if (m_entries.size() <= index)
    m_entries.resize(index + 1, {0, 0});
  m_entries[index] = {uint64_t(std::ftell(m_file)), uint32_t(entry.size())};
  std::fwrite(entry.data(), 1, entry.size(), m_file);
}

void ReportWriter::finish(const BuildSummary& summary) {
  std::fflush(m_file);
  AtomicFile out(m_path);
  out.write("{\n  \"summary\": " + summary_json(summary) + ",\n  \"assets\": [");
  std::string entry;
  bool first = true;
  for (auto [offset, length] : m_entries) {
    if (length == 0)
      continue; // an asset with no outcome (none today)
    entry.resize(length);
    if (std::fseek(m_file, long(offset), SEEK_SET) != 0 ||
        std::fread(entry.data(), 1, length, m_file) != length)
      throw Fatal("cannot read back the report's spool '" + m_spool.string() + "'");
    out.write(first ? "\n" : ",\n");
    out.write(entry);
    first = false;
  }
  out.write(first ? "]\n}\n" : "\n  ]\n}\n");
  out.commit();
}

} // namespace kiln::host
