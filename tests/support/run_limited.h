// Runs the miniseq program under resource limits and reports how it ended: exit status or signal, output, and
// its peak resident memory. For tests of hostile input files (tests/test_parser_hardening.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace miniseq::test {

struct LimitedRun {
  int status = -1;         // exit status; -1 when killed by a signal
  int signal = 0;          // the signal that ended it, or 0
  std::string out;         // stdout and stderr together
  int64_t max_rss_kb = 0;  // peak resident set size
};

// args: the arguments after the program name (no shell: nothing needs quoting). The address space is capped
// at address_space_mb (an allocation beyond it fails instead of swamping the machine) and CPU time at
// cpu_seconds. It runs with 2 OpenMP threads and 2 malloc arenas, so what it reserves does not grow with the
// cores.
LimitedRun run_miniseq_limited(const std::vector<std::string>& args, int64_t address_space_mb = 8192,
                               int cpu_seconds = 60);

}  // namespace miniseq::test
