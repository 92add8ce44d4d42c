// Resident-set measurements of this process (Linux /proc), for checking the memory plan against reality.
#pragma once

#include <cstddef>

namespace miniseq {

size_t current_rss_bytes();  // VmRSS
size_t peak_rss_bytes();     // VmHWM: the high-water mark since start or the last reset
void reset_peak_rss();       // writes 5 to /proc/self/clear_refs (resets VmHWM to the current RSS); best effort

}  // namespace miniseq
