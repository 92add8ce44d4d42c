// The golden cases written by tools/make_goldens.py (tests/data/golden/<case>/: model/, batch.jsonl,
// grads.safetensors, ...; docs/goldens.md), and the test data directory they live in.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace miniseq::test {

// tests/data: $MINISEQ_TEST_DATA when set and not empty (tests run from a copy of the tree, or binaries built
// elsewhere: scripts/gpu-check.sh sets it), else the source tree's tests/data (MINISEQ_SOURCE_DIR, baked in
// at configure time). Read on every call.
std::filesystem::path test_data_dir();
std::filesystem::path golden_dir();  // test_data_dir() / "golden"
// The names of the cases that hold `file` (a path relative to the case directory), sorted; empty when the
// goldens are absent.
std::vector<std::string> golden_cases(const std::string& file);

}  // namespace miniseq::test
