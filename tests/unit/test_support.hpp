#pragma once

#include "fatal.hpp"
#include "util.hpp"

#include <chrono>
#include <cstdlib>
#include <gtest/gtest.h>
#include <string>
#include <thread>

namespace kiln::host::test {

// A fresh folder under the system temp dir, removed at the end of the test.
class TempDir {
public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kiln-test-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw std::runtime_error("mkdtemp failed");
    m_path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  const fs::path& path() const { return m_path; }
  fs::path operator/(const std::string& rel) const { return m_path / rel; }

private:
  fs::path m_path;
};

// The message of the Fatal `body` throws; fails the test if it throws none.
template <class F> std::string fatal_message(F&& body) {
  try {
    body();
  } catch (const Fatal& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a Fatal error";
  return {};
}

// Waits for `event` (a state another thread reaches, read under its owner's lock): true as soon
// as it holds. The deadline only ends a test that would otherwise hang; it decides nothing.
template <class F> bool eventually(F&& event) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!event()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::yield();
  }
  return true;
}

} // namespace kiln::host::test
