#include "diagnostics.hpp"

#include "fatal.hpp"
#include "util.hpp"

#include <algorithm>
#include <optional>

namespace kiln::host {

Diagnostics::Diagnostics(std::string display_path, std::shared_ptr<const std::string> source)
    : m_display_path(std::move(display_path)), m_source(std::move(source)) {}

namespace {

// Line `number` (1-based) of `text` without its line break; nullopt past the end.
std::optional<std::string_view> line_of(std::string_view text, uint32_t number) {
  size_t start = 0;
  for (uint32_t n = 1; n < number; ++n) {
    start = text.find('\n', start);
    if (start == std::string_view::npos)
      return std::nullopt;
    ++start;
  }
  size_t end = std::min(text.find('\n', start), text.size());
  std::string_view line = text.substr(start, end - start);
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  return line;
}

} // namespace

std::string Diagnostics::format(SourceLoc loc, const std::string& message) const {
  std::string out = m_display_path;
  if (loc.line > 0) {
    out += ':' + std::to_string(loc.line);
    if (loc.column > 0)
      out += ':' + std::to_string(loc.column);
  }
  out += ": " + message;
  std::optional<std::string_view> found;
  std::string reread;
  if (loc.line > 0 && m_source) {
    found = line_of(*m_source, loc.line);
  } else if (loc.line > 0 && !m_file.empty()) {
    reread = read_file(m_file).value_or("");
    found = line_of(reread, loc.line);
  }
  if (found) {
    std::string_view line = *found;
    out += "\n    ";
    out += line;
    if (loc.column > 0) {
      out += "\n    ";
      // Keep tabs so the caret lines up under tab-indented text.
      for (uint32_t i = 1; i < loc.column && i - 1 < line.size(); ++i)
        out += line[i - 1] == '\t' ? '\t' : ' ';
      out += '^';
    }
  }
  return out;
}

void Diagnostics::error(SourceLoc loc, const std::string& message) {
  m_errors.push_back(format(loc, message));
}

std::string Diagnostics::text() const {
  std::string out;
  for (const auto& e : m_errors) {
    if (!out.empty())
      out += '\n';
    out += e;
  }
  return out;
}

void Diagnostics::throw_if_errors() const {
  if (has_errors())
    throw Fatal(text(), k_exit_usage, true);
}

} // namespace kiln::host
