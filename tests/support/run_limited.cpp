#include "support/run_limited.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>

namespace miniseq::test {

LimitedRun run_miniseq_limited(const std::vector<std::string>& args, int64_t address_space_mb,
                               int cpu_seconds) {
  std::vector<std::string> argv_s = {MINISEQ_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const rlim_t as = static_cast<rlim_t>(address_space_mb) << 20;
    const rlimit mem{as, as}, cpu{static_cast<rlim_t>(cpu_seconds), static_cast<rlim_t>(cpu_seconds)};
    setrlimit(RLIMIT_AS, &mem);
    setrlimit(RLIMIT_CPU, &cpu);
    // Few threads and malloc arenas: the address space a run reserves must not grow with the core count.
    setenv("OMP_NUM_THREADS", "2", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("MALLOC_ARENA_MAX", "2", 1);
    const rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  LimitedRun r;
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = read(fds[0], buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.out.append(buf.data(), static_cast<size_t>(n));
  }
  close(fds[0]);
  int st = 0;
  rusage ru{};
  while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
  }
  r.max_rss_kb = ru.ru_maxrss;
  if (WIFEXITED(st)) r.status = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) r.signal = WTERMSIG(st);
  return r;
}

}  // namespace miniseq::test
