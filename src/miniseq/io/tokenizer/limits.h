// Limits on the structure of a tokenizer.json, checked at load with an error naming the file and key.
#pragma once

namespace miniseq::tok {

// Sequence normalizers, pre-tokenizers, decoders and post-processors may nest (real files nest one or two).
constexpr int kMaxSequenceDepth = 8;

}  // namespace miniseq::tok
