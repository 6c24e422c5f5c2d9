// The JSON report (`--report`): a pinned format, extended never renamed. Written as the run
// goes: each asset's entry is appended to a spool file beside the report when it is final, and
// finish() writes the report atomically with the entries in manifest order, so a run of any
// size keeps no outcome in memory.
#pragma once

#include "outcome.hpp"

#include <cstdio>
#include <utility>
#include <vector>

namespace kiln::host {

class ReportWriter : public OutcomeSink {
public:
  explicit ReportWriter(fs::path path);
  ~ReportWriter() override; // removes the spool
  ReportWriter(const ReportWriter&) = delete;
  ReportWriter& operator=(const ReportWriter&) = delete;

  void add(size_t index, const AssetOutcome& outcome) override;
  void finish(const BuildSummary& summary);

private:
  fs::path m_path;
  fs::path m_spool;
  std::FILE* m_file = nullptr;
  std::vector<std::pair<uint64_t, uint32_t>> m_entries; // by plan index: spool offset, length
};

} // namespace kiln::host
