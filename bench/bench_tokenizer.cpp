// Tokenizer encode throughput (MB/s of UTF-8 input) on English text for the real vocabularies, as a plain
// main:
//   build/bench_tokenizer [--vocab DIR] [--reps N] [TEXT_FILE ...]
// Run from the repository root. DIR holds mistral/, llama3/, qwen3/ (default $MINISEQ_TEST_DATA/tokenizers or
// ../shared/data/tokenizers). Without TEXT_FILEs the text is Python's pydoc topics and Vim's help files
// (English reference prose) when present. Documents are the text's paragraphs (split at blank lines). For
// each vocabulary it reports:
//   cold   one thread, a new tokenizer (empty merge cache), one pass
//   warm   one thread, the best of --reps further passes (cache filled)
//   batch  encode_batch over all OpenMP threads
// each as wall-clock MB/s and as MB per CPU-second (= MB/s per core, unaffected by other load on the
// machine). Before timing, each vocabulary's ids are checked against the committed Hugging Face reference
// (tests/data/tokenizer) and the benchmark stops on any difference.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "miniseq/io/tokenizer/tokenizer.h"

#ifndef MINISEQ_SOURCE_DIR
#define MINISEQ_SOURCE_DIR "."  // benchmarks run from the repository root
#endif

namespace fs = std::filesystem;
using miniseq::tok::Tokenizer;

namespace {
std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

std::vector<std::string> paragraphs(const std::string& text) {
  std::vector<std::string> docs;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) docs.push_back(text.substr(pos, end - pos + (end < text.size() ? 1 : 0)));
    pos = end + 2;
  }
  return docs;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU seconds of this thread or of the whole process. The machine may be shared: MB per CPU-second is the
// rate per core whatever else runs, wall-clock MB/s is what this run saw.
double cpu(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

bool check_reference(const Tokenizer& t, const std::string& name) {
  const fs::path data = fs::path(MINISEQ_SOURCE_DIR) / "tests" / "data" / "tokenizer";
  std::ifstream cf(data / "corpus.json"), rf(data / ("reference_" + name + ".json"));
  if (!cf || !rf) {
    std::printf("  (reference data not found under %s: ids not checked)\n", data.c_str());
    return true;
  }
  const auto corpus = nlohmann::json::parse(cf).get<std::vector<std::string>>();
  const auto ref = nlohmann::json::parse(rf);
  for (size_t i = 0; i < corpus.size(); ++i)
    if (t.encode(corpus[i]) != ref["ids"][i].get<std::vector<int32_t>>()) {
      std::printf("  ids differ from Hugging Face on corpus[%zu]; not timing\n", i);
      return false;
    }
  std::printf("  ids identical to Hugging Face on %zu reference strings\n", corpus.size());
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  fs::path vocab;
  int reps = 3;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--vocab" && i + 1 < argc)
      vocab = argv[++i];
    else if (a == "--reps" && i + 1 < argc)
      reps = std::atoi(argv[++i]);
    else
      files.emplace_back(a);
  }
  if (vocab.empty()) {
    const char* env = std::getenv("MINISEQ_TEST_DATA");
    vocab = env ? fs::path(env) / "tokenizers"
                : fs::path(MINISEQ_SOURCE_DIR) / ".." / "shared" / "data" / "tokenizers";
  }
  if (files.empty()) {
    for (const char* p :
         {"/usr/lib/python3.11/pydoc_data/topics.py", "/usr/lib/python3/pydoc_data/topics.py"})
      if (fs::exists(p)) files.emplace_back(p);
    if (fs::exists("/usr/share/vim/vim90/doc"))
      for (const auto& e : fs::directory_iterator("/usr/share/vim/vim90/doc"))
        if (e.path().extension() == ".txt") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) text += read(f) + "\n\n";
  if (text.size() < 1000) {
    std::fprintf(stderr, "bench_tokenizer: no text: give one or more English text files\n");
    return 2;
  }
  const auto docs = paragraphs(text);
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  const double mb = static_cast<double>(bytes) / 1e6;
  std::printf("text: %zu files, %.1f MB, %zu documents; %d OpenMP threads\n", files.size(), mb, docs.size(),
              omp_get_max_threads());
  std::printf("%-8s %9s | %-21s | %-21s | %-26s\n", "", "", "cold, 1 thread", "warm, 1 thread",
              "encode_batch, all threads");
  std::printf("%-8s %9s | %10s %10s | %10s %10s | %10s %15s\n", "vocab", "tokens", "MB/s", "MB/cpu-s", "MB/s",
              "MB/cpu-s", "MB/s", "MB/cpu-s/core");
  for (const std::string name : {"mistral", "llama3", "qwen3"}) {
    if (!fs::exists(vocab / name / "tokenizer.json")) {
      std::printf("%-8s not found under %s\n", name.c_str(), vocab.c_str());
      continue;
    }
    const Tokenizer t = Tokenizer::load((vocab / name).string());  // fresh: empty merge cache
    if (!check_reference(t, name)) return 1;
    const Tokenizer fresh = Tokenizer::load((vocab / name).string());
    size_t tokens = 0;
    double w0 = now(), c0 = cpu(CLOCK_THREAD_CPUTIME_ID);
    for (const auto& d : docs) tokens += fresh.encode(d).size();
    const double cold_wall = now() - w0, cold_cpu = cpu(CLOCK_THREAD_CPUTIME_ID) - c0;
    double warm_wall = 1e30, warm_cpu = 1e30, all_wall = 1e30, all_cpu = 1e30;
    for (int r = 0; r < reps; ++r) {
      w0 = now(), c0 = cpu(CLOCK_THREAD_CPUTIME_ID);
      for (const auto& d : docs) fresh.encode(d);
      warm_wall = std::min(warm_wall, now() - w0);
      warm_cpu = std::min(warm_cpu, cpu(CLOCK_THREAD_CPUTIME_ID) - c0);
    }
    for (int r = 0; r < reps; ++r) {
      w0 = now(), c0 = cpu(CLOCK_PROCESS_CPUTIME_ID);
      auto out = fresh.encode_batch(docs);
      all_wall = std::min(all_wall, now() - w0);
      all_cpu = std::min(all_cpu, cpu(CLOCK_PROCESS_CPUTIME_ID) - c0);
    }
    std::printf("%-8s %9zu | %10.1f %10.1f | %10.1f %10.1f | %10.1f %15.1f\n", name.c_str(), tokens,
                mb / cold_wall, mb / cold_cpu, mb / warm_wall, mb / warm_cpu, mb / all_wall, mb / all_cpu);
  }
  return 0;
}
