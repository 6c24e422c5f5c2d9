// libFuzzer target: what Kiln reads back from its own files, which a crash, a disk or a person
// may have damaged: the state snapshot, the journal and kiln.lock, the cache's counts; and a
// remote cache's records, which a hostile server may send.
#include "cache_stats.hpp"
#include "fatal.hpp"
#include "lockfile.hpp"
#include "remote_cache.hpp"
#include "state.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <unistd.h>

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fs::path dir = [] {
    // In memory when the machine has /dev/shm: three files are written per input.
    fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string pattern = (base / "kiln-fuzz-XXXXXX").string();
    ::mkdtemp(pattern.data());
    ::setenv("KILN_STATE_DIR", pattern.c_str(), 1);
    return fs::path(pattern);
  }();
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"state.jsonl", "journal.jsonl", "kiln.lock", "stats.json"})
    std::ofstream(dir / name, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), std::streamsize(bytes.size()));
  {
    kiln::host::StateFile state(dir);
    (void)state.load(false);
    (void)state.find("icons/sword");
  }
  (void)kiln::host::read_cache_stats(dir);
  (void)kiln::host::parse_remote_record(std::string(bytes));
  try {
    kiln::host::Lockfile lock(dir / "kiln.lock");
    lock.load();
    (void)lock.find("icons/sword");
  } catch (const kiln::host::Fatal&) {
  }
  return 0;
}
