// Small file and text helpers shared by the whole host: whole-file reads, atomic writes
// (temp + fsync + rename), SHA-256, did-you-mean, money formatting.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::host {

namespace fs = std::filesystem;

// Reads a whole file; std::nullopt when it cannot be opened.
std::optional<std::string> read_file(const fs::path& path);

// Writes `data` to `path` atomically: a temp file in the same folder, fsync, rename, fsync the
// folder. Creates missing parent folders. Throws std::runtime_error naming the path on failure.
void write_file_atomic(const fs::path& path, std::string_view data);

// `length` bytes of the open file `fd` from `offset`; nullopt on an error or a short file.
std::optional<std::string> pread_exact(int fd, uint64_t offset, size_t length);
// Writes all of `data` to `fd` (retrying short writes and EINTR); false on an error (errno).
bool write_fully(int fd, std::string_view data);

// The same, written in pieces: the file appears, whole, at commit(); destroyed uncommitted, it
// never appears and its temp file is removed.
class AtomicFile {
public:
  explicit AtomicFile(fs::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view data);
  void commit();

private:
  [[noreturn]] void fail(const std::string& what, const fs::path& path);

  fs::path m_path;
  fs::path m_tmp;
  int m_fd = -1;
};
// Creates the file (and its folder) if missing and sets its modification time to now.
void touch_file(const fs::path& path);

// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
std::optional<std::string> did_you_mean(std::string_view word,
                                        const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& parts, std::string_view separator);

// Formats dollars for people: "$0.003", "$1.25".
std::string format_usd(double usd);

// The folder of the running executable.
fs::path executable_dir();

} // namespace kiln::host
