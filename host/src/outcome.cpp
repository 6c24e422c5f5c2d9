#include "outcome.hpp"

namespace kiln::host {

std::string_view status_name(Status status) {
  switch (status) {
  case Status::Generated:
    return "generated";
  case Status::Cached:
    return "cached";
  case Status::UpToDate:
    return "up_to_date";
  case Status::Failed:
    return "failed";
  case Status::Skipped:
    return "skipped";
  case Status::Kept:
    return "kept";
  }
  return "failed";
}

std::string_view origin_name(Origin origin) {
  switch (origin) {
  case Origin::None:
    return "";
  case Origin::Generated:
    return "generated";
  case Origin::Cached:
    return "cached";
  case Origin::Remote:
    return "remote";
  }
  return "";
}

void BuildSummary::count(const AssetOutcome& o) {
  remote += o.origin == Origin::Remote;
  saved_usd += o.saved_usd;
  if (o.status == Status::Failed && o.error && o.error->category == KILN_ERROR_NEEDS_PERSON &&
      !o.attempts.empty())
    stopped.push_back(o.attempts.back().backend + ": " + o.name + ": " + o.error->message);
  cost_usd += o.cost_usd;
  switch (o.status) {
  case Status::Generated:
    ++generated;
    break;
  case Status::Cached:
    ++cached;
    break;
  case Status::UpToDate:
    ++up_to_date;
    break;
  case Status::Skipped:
    ++skipped;
    break;
  case Status::Kept:
    ++kept;
    break;
  case Status::Failed:
    ++failed;
    break;
  }
  if (o.fallback)
    fallback_names.push_back(o.name);
  if (o.error && o.error->category == KILN_ERROR_NEEDS_PERSON)
    needs_a_person = true;
  if (o.error && o.error->category == KILN_ERROR_INTERRUPTED)
    interrupted = true;
}

} // namespace kiln::host
