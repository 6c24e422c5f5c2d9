#include "util.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <openssl/evp.h>
#include <random>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::host {

std::optional<std::string> read_file(const fs::path& path) {
  // Regular files only: a FIFO planted where a record or an output should be would block the
  // read for ever (O_NONBLOCK lets the open return, then it is refused).
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    errno = EINVAL;
    return std::nullopt;
  }
  auto data = pread_exact(fd, 0, size_t(st.st_size));
  const int error = errno;
  ::close(fd);
  errno = error;
  return data;
}

std::optional<std::string> pread_exact(int fd, uint64_t offset, size_t length) {
  std::string out(length, '\0');
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, out.data() + done, length - done, off_t(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return std::nullopt;
    done += size_t(n);
  }
  return out;
}

bool write_fully(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return false;
    data.remove_prefix(size_t(n));
  }
  return true;
}

namespace {

[[noreturn]] void io_error(const std::string& what, const fs::path& path) {
  throw std::runtime_error("cannot " + what + " '" + path.string() + "': " + std::strerror(errno));
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string temp_suffix() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, ".%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

} // namespace

AtomicFile::AtomicFile(fs::path path) : m_path(std::move(path)) {
  fs::path dir = m_path.parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      throw std::runtime_error("cannot create folder '" + dir.string() + "': " + ec.message());
  }
  // The ".kiln-tmp" marker lets a later run recognise and remove leftovers of a killed one.
  m_tmp = m_path;
  m_tmp += ".kiln-tmp" + temp_suffix();
  m_fd = ::open(m_tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (m_fd < 0)
    io_error("create", m_tmp);
}

AtomicFile::~AtomicFile() {
  if (m_fd >= 0) {
    ::close(m_fd);
    ::unlink(m_tmp.c_str());
  }
}

void AtomicFile::fail(const std::string& what, const fs::path& path) {
  int saved = errno;
  if (m_fd >= 0)
    ::close(m_fd);
  m_fd = -1;
  ::unlink(m_tmp.c_str());
  errno = saved;
  io_error(what, path);
}

void AtomicFile::write(std::string_view data) {
  if (!write_fully(m_fd, data))
    fail("write", m_tmp);
}

void AtomicFile::commit() {
  if (::fsync(m_fd) != 0)
    fail("write", m_tmp);
  int fd = m_fd;
  m_fd = -1;
  if (::close(fd) != 0) {
    ::unlink(m_tmp.c_str());
    io_error("write", m_tmp);
  }
  if (::rename(m_tmp.c_str(), m_path.c_str()) != 0) {
    int saved = errno;
    ::unlink(m_tmp.c_str());
    errno = saved;
    io_error("rename into", m_path);
  }
  fs::path dir = m_path.parent_path();
  fsync_dir(dir.empty() ? fs::path(".") : dir);
}

void write_file_atomic(const fs::path& path, std::string_view data) {
  AtomicFile file(path);
  file.write(data);
  file.commit();
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

static size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::optional<std::string> did_you_mean(std::string_view word,
                                        const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i)
      out += separator;
    out += parts[i];
  }
  return out;
}

void touch_file(const fs::path& path) {
  std::error_code ec;
  if (path.has_parent_path())
    fs::create_directories(path.parent_path(), ec);
  // Never through a link planted in its place (a stamp, a sweep marker), nor blocking on a
  // FIFO; the error says why (a read-only folder is not "no such file").
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0 || ::futimens(fd, nullptr) != 0) {
    const int error = errno;
    if (fd >= 0)
      ::close(fd);
    throw std::runtime_error("cannot touch '" + path.string() + "': " +
                             (error == ELOOP ? std::string("it is a symbolic link, which Kiln "
                                                           "does not write through")
                                             : std::string(std::strerror(error))));
  }
  ::close(fd);
}

std::string format_usd(double usd) {
  char buf[64];
  // Images cost fractions of a cent: below a dollar, four decimals keep $0.0240 from reading
  // as $0.02.
  if (usd != 0 && usd < 1.0)
    std::snprintf(buf, sizeof buf, "$%.4f", usd);
  else
    std::snprintf(buf, sizeof buf, "$%.2f", usd);
  return buf;
}

fs::path executable_dir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : self.parent_path();
}

} // namespace kiln::host
