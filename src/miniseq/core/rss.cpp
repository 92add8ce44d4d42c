#include "miniseq/core/rss.h"

#include <cstdio>
#include <cstring>

namespace miniseq {

namespace {
size_t status_field_kib(const char* field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  size_t kib = 0;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      std::sscanf(line + n + 1, "%zu", &kib);
      break;
    }
  }
  std::fclose(f);
  return kib;
}
}  // namespace

size_t current_rss_bytes() { return status_field_kib("VmRSS") * 1024; }
size_t peak_rss_bytes() { return status_field_kib("VmHWM") * 1024; }

void reset_peak_rss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return;
  std::fputs("5", f);
  std::fclose(f);
}

}  // namespace miniseq
