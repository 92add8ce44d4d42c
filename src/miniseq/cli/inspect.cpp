#include "miniseq/cli/commands.h"
#include "miniseq/core/check.h"

namespace miniseq::cli {
int cmd_inspect(const Args&) { fail("inspect: model I/O is being written"); }
}  // namespace miniseq::cli
