#include "noop.hpp"

#include "cache.hpp"
#include "version.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::host {

namespace {

constexpr const char* k_magic = "kiln-noop 1";

// The environment a plan depends on: the plugin path and the remote cache, hashed (an address
// may carry credentials, which are written nowhere).
std::string plan_env() {
  std::string text;
  for (const char* name :
       {"KILN_PLUGIN_PATH", "KILN_REMOTE_CACHE", "KILN_REMOTE_CACHE_READ_ONLY"}) {
    const char* v = std::getenv(name);
    text += std::string(v ? v : "") + '\x1f';
  }
  return sha256_hex(text);
}

} // namespace

fs::path noop_record_path(const NoopKey& key) {
  std::string id = std::string(k_kiln_version) + '\0' + key.manifest.string() + '\0' +
                   key.output_dir + '\0' + key.backend + '\0' + key.state;
  return Cache::default_dir() / "noop" / (sha256_hex(id).substr(0, 32) + ".txt");
}

std::optional<size_t> noop_check(const NoopKey& key) {
  auto text = read_file(noop_record_path(key));
  if (!text)
    return std::nullopt;
  std::string& t = *text;
  std::string header = std::string(k_magic) + "\nenv " + plan_env() + "\n";
  if (t.compare(0, header.size(), header) != 0 || t.empty() || t.back() != '\n')
    return std::nullopt;
  // Outputs are grouped by folder: each folder is opened once and its files stat'ed relative
  // to it, which spares the kernel walking the whole path 10,000 times.
  int dir = AT_FDCWD;
  struct DirCloser {
    int& fd;
    ~DirCloser() {
      if (fd != AT_FDCWD)
        ::close(fd);
    }
  } closer{dir};
  size_t assets = 0;
  for (size_t pos = header.size(); pos < t.size();) {
    size_t eol = t.find('\n', pos);
    t[eol] = '\0';
    char* line = t.data() + pos;
    pos = eol + 1;
    if (line[0] == 'd') { // "d <folder>"
      if (dir != AT_FDCWD)
        ::close(dir);
      dir = ::open(line + 2, O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (dir < 0)
        return std::nullopt;
      continue;
    }
    // "i <size> <mtime_ns> <absolute path>" or "o <size> <mtime_ns> <name in the folder>"
    char* end = nullptr;
    unsigned long long size = std::strtoull(line + 2, &end, 10);
    long long mtime = std::strtoll(end, &end, 10);
    if (*end != ' ')
      return std::nullopt;
    struct stat st;
    if (::fstatat(line[0] == 'o' ? dir : AT_FDCWD, end + 1, &st, 0) != 0 ||
        uint64_t(st.st_size) != size ||
        int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec != mtime)
      return std::nullopt;
    assets += line[0] == 'o';
  }
  return assets;
}

namespace {

void add_line(std::string& text, char kind, const FileStamp& stamp, const std::string& name) {
  text += kind;
  text += ' ' + std::to_string(stamp.size) + ' ' + std::to_string(stamp.mtime_ns) + ' ';
  text += name;
  text += '\n';
}

} // namespace

NoopRecorder::NoopRecorder(NoopKey key, const std::vector<fs::path>& inputs)
    : m_key(std::move(key)), m_text(std::string(k_magic) + "\nenv " + plan_env() + "\n") {
  for (auto& p : inputs) {
    auto stamp = stat_file(p);
    if (!stamp) {
      m_ok = false;
      return;
    }
    add_line(m_text, 'i', *stamp, p.string());
  }
}

void NoopRecorder::output(const fs::path& path, const FileStamp& stamp) {
  if (!m_ok)
    return;
  if (path.parent_path() != m_folder) {
    m_folder = path.parent_path();
    m_text += "d " + m_folder.string() + "\n";
  }
  add_line(m_text, 'o', stamp, path.filename().string());
}

void NoopRecorder::commit() {
  if (!m_ok)
    return;
  try {
    write_file_atomic(noop_record_path(m_key), m_text);
  } catch (const std::exception&) {
  }
}

void noop_forget(const NoopKey& key) {
  std::error_code ec;
  fs::remove(noop_record_path(key), ec);
}

} // namespace kiln::host
