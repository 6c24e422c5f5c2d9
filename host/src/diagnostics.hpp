// Errors about a user's file, in the form build tools use: `file:line:col: message`, then the
// offending line and a caret under the column.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::host {

struct SourceLoc {
  uint32_t line = 0; // 1-based; 0 = unknown
  uint32_t column = 0;
};

class Diagnostics {
public:
  Diagnostics() = default;
  // `source` is shared, not copied: a manifest of 10,000 assets is held once.
  Diagnostics(std::string display_path, std::shared_ptr<const std::string> source);

  // Drops the text: lines shown later are read from `file` again (a manifest of 10,000 assets
  // is not kept in memory for a rare late error).
  void read_lines_from(std::string file) {
    m_source.reset();
    m_file = std::move(file);
  }

  void error(SourceLoc loc, const std::string& message);
  bool has_errors() const { return !m_errors.empty(); }
  size_t error_count() const { return m_errors.size(); }
  // All errors, each with its source line and caret; throws Fatal(k_exit_usage) when any.
  void throw_if_errors() const;
  std::string text() const;
  const std::string& display_path() const { return m_display_path; }
  // `file:line:col: message` plus the source line and caret.
  std::string format(SourceLoc loc, const std::string& message) const;

private:
  std::string m_display_path;
  std::shared_ptr<const std::string> m_source;
  std::string m_file;
  std::vector<std::string> m_errors;
};

} // namespace kiln::host
