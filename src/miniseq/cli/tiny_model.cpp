#include "miniseq/cli/commands.h"
#include "miniseq/core/check.h"

namespace miniseq::cli {
int cmd_tiny_model(const Args&) { fail("tiny-model: model I/O is being written"); }
}  // namespace miniseq::cli
