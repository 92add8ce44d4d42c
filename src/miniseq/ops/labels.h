// The labels of a cross-entropy chunk, checked on the host by every backend before its kernel reads them.
#pragma once

#include <cstdint>

namespace miniseq {

constexpr int32_t kIgnoreLabel = -100;  // torch.nn.CrossEntropyLoss's ignore_index

// Every labels[r] (r < rows) is kIgnoreLabel or in [0, vocab); otherwise a user error naming the row and
// label.
void check_labels(const int32_t* labels, int64_t rows, int64_t vocab);

}  // namespace miniseq
