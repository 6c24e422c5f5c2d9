#include "state.hpp"

#include <cstdlib>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <set>
#include <sys/stat.h>

namespace kiln::host {

namespace {
constexpr int k_state_version = 1;
}

StateFile::StateFile(fs::path output_dir) : m_path(kiln_dir(output_dir) / "state.json") {}

std::optional<std::string> StateFile::load() {
  m_records.clear();
  m_dirty = false;
  auto text = read_file(m_path);
  if (!text)
    return std::nullopt;
  rapidjson::Document doc;
  doc.Parse(text->data(), text->size());
  auto corrupt = [&](const std::string& why) {
    m_records.clear();
    m_dirty = true; // rewrite it whole at the end of the run
    return std::optional<std::string>("state file '" + m_path.string() + "' " + why +
                                      "; rebuilding it (images come back from the cache)");
  };
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("assets") ||
      !doc["assets"].IsObject())
    return corrupt("is not valid");
  if (!doc.HasMember("version") || !doc["version"].IsInt() ||
      doc["version"].GetInt() != k_state_version)
    return corrupt("has another version");
  for (auto& m : doc["assets"].GetObject()) {
    const auto& v = m.value;
    if (!v.IsObject() || !v.HasMember("output") || !v["output"].IsString() ||
        !v.HasMember("fingerprint") || !v["fingerprint"].IsString() || !v.HasMember("size") ||
        !v["size"].IsUint64() || !v.HasMember("mtime_ns") || !v["mtime_ns"].IsInt64())
      return corrupt("has a malformed entry");
    OutputRecord r;
    r.output = v["output"].GetString();
    r.fingerprint = v["fingerprint"].GetString();
    r.size = v["size"].GetUint64();
    r.mtime_ns = v["mtime_ns"].GetInt64();
    if (v.HasMember("fields") && v["fields"].IsArray())
      for (auto& f : v["fields"].GetArray())
        if (f.IsArray() && f.Size() == 2 && f[0].IsString() && f[1].IsString())
          r.fields.emplace_back(f[0].GetString(), f[1].GetString());
    if (v.HasMember("checks") && v["checks"].IsString())
      r.checks = v["checks"].GetString();
    r.fallback = v.HasMember("fallback") && v["fallback"].IsBool() && v["fallback"].GetBool();
    m_records.emplace(m.name.GetString(), std::move(r));
  }
  return std::nullopt;
}

void StateFile::save() {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("version");
  w.Int(k_state_version);
  w.Key("assets");
  w.StartObject();
  for (auto& [name, r] : m_records) {
    w.Key(name.c_str(), rapidjson::SizeType(name.size()));
    w.StartObject();
    w.Key("output");
    w.String(r.output.c_str(), rapidjson::SizeType(r.output.size()));
    w.Key("fingerprint");
    w.String(r.fingerprint.c_str(), rapidjson::SizeType(r.fingerprint.size()));
    w.Key("size");
    w.Uint64(r.size);
    w.Key("mtime_ns");
    w.Int64(r.mtime_ns);
    w.Key("checks");
    w.String(r.checks.c_str(), rapidjson::SizeType(r.checks.size()));
    if (r.fallback) {
      w.Key("fallback");
      w.Bool(true);
    }
    w.Key("fields");
    w.StartArray();
    for (auto& [k, v] : r.fields) {
      w.StartArray();
      w.String(k.c_str(), rapidjson::SizeType(k.size()));
      w.String(v.c_str(), rapidjson::SizeType(v.size()));
      w.EndArray();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
  write_file_atomic(m_path, std::string_view(buf.GetString(), buf.GetSize()));
  m_dirty = false;
}

const OutputRecord* StateFile::find(const std::string& name) const {
  auto it = m_records.find(name);
  return it == m_records.end() ? nullptr : &it->second;
}

void StateFile::put(const std::string& name, OutputRecord record) {
  m_records[name] = std::move(record);
  m_dirty = true;
}

void StateFile::retain(const std::vector<std::string>& names) {
  std::set<std::string_view> keep(names.begin(), names.end());
  for (auto it = m_records.begin(); it != m_records.end();) {
    if (keep.count(it->first)) {
      ++it;
    } else {
      it = m_records.erase(it);
      m_dirty = true;
    }
  }
}

std::optional<FileStamp> stat_file(const fs::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return std::nullopt;
  return FileStamp{uint64_t(st.st_size),
                   int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

fs::path Cache::default_dir() {
  if (const char* d = std::getenv("KILN_CACHE_DIR"); d && *d)
    return fs::absolute(d);
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d)
    return fs::path(d) / "kiln";
  if (const char* h = std::getenv("HOME"); h && *h)
    return fs::path(h) / ".cache" / "kiln";
  return fs::temp_directory_path() / "kiln-cache";
}

fs::path Cache::path_for(const std::string& fp, const std::string& format) const {
  return m_dir / "v1" / fp.substr(0, 2) / (fp + "." + format);
}

bool Cache::contains(const std::string& fp, const std::string& format) const {
  return stat_file(path_for(fp, format)).has_value();
}

std::optional<std::string> Cache::get(const std::string& fp, const std::string& format) const {
  return read_file(path_for(fp, format));
}

void Cache::put(const std::string& fp, const std::string& format, std::string_view bytes) {
  write_file_atomic(path_for(fp, format), bytes);
}

} // namespace kiln::host
