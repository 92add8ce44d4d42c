// The golden cases written by tools/make_goldens.py (tests/data/golden/<case>/: model/, batch.jsonl,
// grads.safetensors, ...; docs/goldens.md).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace miniseq::test {

std::filesystem::path golden_dir();  // tests/data/golden in the source tree
// The names of the cases that hold `file` (a path relative to the case directory), sorted; empty when the
// goldens are absent.
std::vector<std::string> golden_cases(const std::string& file);

}  // namespace miniseq::test
