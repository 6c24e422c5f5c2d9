// The engine's public face, for the CLI and the tests: plan (plan.hpp), run (run.hpp), the
// report (report.hpp) and what touches the output folder outside a run (outputs.hpp).
// ARCHITECTURE.md maps the parts.
#pragma once

#include "outputs.hpp"
#include "plan.hpp"
#include "report.hpp"
#include "run.hpp"
