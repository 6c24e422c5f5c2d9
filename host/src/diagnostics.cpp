#include "diagnostics.hpp"

#include "fatal.hpp"

namespace kiln::host {

Diagnostics::Diagnostics(std::string display_path, std::string_view source)
    : m_display_path(std::move(display_path)) {
  size_t start = 0;
  while (start <= source.size()) {
    size_t end = source.find('\n', start);
    if (end == std::string_view::npos)
      end = source.size();
    std::string_view line = source.substr(start, end - start);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    m_lines.emplace_back(line);
    start = end + 1;
  }
}

std::string Diagnostics::format(SourceLoc loc, const std::string& message) const {
  std::string out = m_display_path;
  if (loc.line > 0) {
    out += ':' + std::to_string(loc.line);
    if (loc.column > 0)
      out += ':' + std::to_string(loc.column);
  }
  out += ": " + message;
  if (loc.line > 0 && loc.line <= m_lines.size()) {
    const std::string& line = m_lines[loc.line - 1];
    out += "\n    " + line;
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
