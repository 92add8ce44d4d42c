// A fresh temporary directory per test, removed afterwards; and helpers to run the miniseq binary.
#pragma once

#include <filesystem>
#include <string>

namespace miniseq::test {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void write_text(const std::string& path, const std::string& text);
std::string read_text(const std::string& path);

struct RunResult {
  int status = -1;   // exit status
  std::string out;   // stdout and stderr together
};
// Runs the built `miniseq` program with the given arguments (shell-quoted by the caller).
RunResult run_miniseq(const std::string& args);

// The repository root (tests/data lives under it).
std::string source_dir();

}  // namespace miniseq::test
