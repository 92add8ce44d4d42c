#include "miniseq/train/token_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "miniseq/core/check.h"
#include "miniseq/core/progress.h"
#include "miniseq/model/batch.h"

namespace miniseq {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'M', 'S', 'T', 'O', 'K', 'E', 'N', '1'};
constexpr size_t kHeader = 64;
constexpr size_t kChunkBytes = size_t{8}
                               << 20;  // text tokenized per batch (ids: up to 4x): memory stays bounded

struct Header {
  char magic[8];
  uint32_t width, reserved;
  uint64_t tokens, key;
  unsigned char pad[32];
};
static_assert(sizeof(Header) == kHeader);

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// What the cache depends on: the data file's identity and the tokenization.
uint64_t cache_key(const std::string& jsonl, const std::string& key, int32_t eos_id, int64_t vocab) {
  struct stat st {};
  MS_CHECK(stat(jsonl.c_str(), &st) == 0, jsonl, ": cannot read the training data (", std::strerror(errno),
           ")");
  uint64_t h = 1469598103934665603ull;
  const int64_t parts[] = {static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec),
                           static_cast<int64_t>(st.st_mtim.tv_nsec), eos_id, vocab};
  h = fnv1a(h, parts, sizeof parts);
  return fnv1a(h, key.data(), key.size());
}

bool writable_dir(const fs::path& dir) {
  return access((dir.empty() ? fs::path(".") : dir).c_str(), W_OK) == 0;
}

}  // namespace

TokenCache& TokenCache::operator=(TokenCache&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    path_ = std::move(o.path_), fd_ = o.fd_, width_ = o.width_, tokens_ = o.tokens_, built_ = o.built_;
    o.fd_ = -1, o.tokens_ = 0;
  }
  return *this;
}

TokenCache::~TokenCache() {
  if (fd_ >= 0) close(fd_);
}

void TokenCache::read(int64_t begin, int64_t n, int32_t* out) const {
  MS_DASSERT(begin >= 0 && n >= 0 && begin + n <= tokens_);
  const size_t bytes = static_cast<size_t>(n) * static_cast<size_t>(width_);
  std::vector<unsigned char> buf(width_ == 2 ? bytes : 0);
  unsigned char* dst = width_ == 2 ? buf.data() : reinterpret_cast<unsigned char*>(out);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t got = pread(fd_, dst + done, bytes - done,
                              static_cast<off_t>(kHeader + static_cast<size_t>(begin) * width_ + done));
    MS_CHECK(got > 0, path_, ": cannot read the token cache (",
             got == 0 ? "it is shorter than its header says" : std::strerror(errno),
             "); delete it to rebuild it");
    done += static_cast<size_t>(got);
  }
  if (width_ == 2)
    for (int64_t i = 0; i < n; ++i) out[i] = buf[2 * i] | (buf[2 * i + 1] << 8);
}

TokenCache TokenCache::open_or_build(const std::string& jsonl, const std::string& key, int32_t eos_id,
                                     int64_t vocab, const TokenizeFn& tokenize, const IdsFn& ids,
                                     bool progress) {
  const uint64_t want = cache_key(jsonl, key, eos_id, vocab);
  fs::path path = jsonl + ".miniseq-tokens";
  if (!writable_dir(path.parent_path()) && !fs::exists(path)) {
    char name[64];
    std::snprintf(name, sizeof name, "miniseq-tokens-%016llx", (unsigned long long)want);
    path = fs::temp_directory_path() / name;
  }
  TokenCache c;
  c.path_ = path.string();
  auto valid = [&](const Header& h) {
    return std::memcmp(h.magic, kMagic, 8) == 0 && h.key == want && (h.width == 2 || h.width == 4) &&
           fs::file_size(path) == kHeader + h.tokens * h.width;
  };
  Header h{};
  bool reuse = false;
  if (fs::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    reuse = in.read(reinterpret_cast<char*>(&h), sizeof h) && valid(h);
  }
  if (!reuse) {
    // ---- build: stream the records, tokenize text in batches, append ids, rename into place ----
    const int width = vocab <= 65536 ? 2 : 4;
    const fs::path tmp = path.string() + ".tmp." + std::to_string(getpid());
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    MS_CHECK(f, tmp.string(), ": cannot write the token cache (", std::strerror(errno), ")");
    uint64_t tokens = 0;
    try {
      Header out{};
      std::memcpy(out.magic, kMagic, 8);
      out.width = static_cast<uint32_t>(width);
      out.key = want;
      MS_CHECK(std::fwrite(&out, sizeof out, 1, f) == 1, tmp.string(), ": write failed (disk full?)");
      std::vector<std::string> texts;
      std::vector<int64_t> lines;
      size_t text_bytes = 0;
      std::vector<unsigned char> buf;
      auto emit = [&](const std::vector<int32_t>& doc, int64_t line) {
        buf.clear();
        buf.reserve((doc.size() + 1) * static_cast<size_t>(width));
        auto put = [&](int32_t id) {
          MS_CHECK(id >= 0 && id < vocab, jsonl, ":", line, ": token id ", id,
                   " is outside the model's vocabulary [0, ", vocab, ")");
          const auto u = static_cast<uint32_t>(id);
          for (int b = 0; b < width; ++b) buf.push_back(static_cast<unsigned char>(u >> (8 * b)));
        };
        for (int32_t id : doc) put(id);
        if (eos_id >= 0) put(eos_id);
        MS_CHECK(std::fwrite(buf.data(), 1, buf.size(), f) == buf.size(), tmp.string(),
                 ": write failed (disk full?)");
        tokens += doc.size() + (eos_id >= 0 ? 1 : 0);
      };
      auto flush_texts = [&] {
        if (texts.empty()) return;
        const auto tokenized = tokenize(texts);
        for (size_t i = 0; i < texts.size(); ++i) emit(tokenized[i], lines[i]);
        texts.clear(), lines.clear(), text_bytes = 0;
      };
      const auto file_bytes = static_cast<int64_t>(fs::file_size(jsonl));
      Progress bar("tokenizing " + fs::path(jsonl).filename().string(), file_bytes, progress);
      int64_t read = 0;
      for_each_jsonl_record(
          jsonl, "the training data (--data_path)", [&](const nlohmann::json& j, int64_t line) {
            read += static_cast<int64_t>(j.is_object() && j.contains("text") && j["text"].is_string()
                                             ? j["text"].get_ref<const std::string&>().size()
                                             : 16);
            if (j.is_object() && j.contains("text")) {
              MS_CHECK(j["text"].is_string(), jsonl, ":", line, ": \"text\" must be a string");
              MS_CHECK(static_cast<bool>(tokenize), jsonl, ":", line,
                       ": text documents need a tokenizer (tokenizer.json in the model directory), or give "
                       "{\"input_ids\": ...}");
              texts.push_back(j["text"].get<std::string>());
              lines.push_back(line);
              text_bytes += texts.back().size();
              if (text_bytes >= kChunkBytes) flush_texts();
            } else {
              flush_texts();  // documents stay in file order
              emit(ids(j, line), line);
            }
            bar.update(std::min(read, file_bytes));
          });
      flush_texts();
      bar.update(file_bytes);
      MS_CHECK(std::fflush(f) == 0 && fsync(fileno(f)) == 0, tmp.string(), ": write failed (disk full?)");
      std::fclose(f);
      f = nullptr;
      out.tokens = tokens;
      std::FILE* g = std::fopen(tmp.c_str(), "r+b");
      MS_CHECK(g && std::fwrite(&out, sizeof out, 1, g) == 1 && std::fclose(g) == 0, tmp.string(),
               ": cannot finish the token cache");
      fs::rename(tmp, path);
      h = out;
      c.built_ = true;
    } catch (...) {
      if (f) std::fclose(f);
      std::error_code ec;
      fs::remove(tmp, ec);
      throw;
    }
  }
  c.width_ = static_cast<int>(h.width);
  c.tokens_ = static_cast<int64_t>(h.tokens);
  c.fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MS_CHECK(c.fd_ >= 0, path.string(), ": cannot open the token cache (", std::strerror(errno), ")");
  return c;
}

}  // namespace miniseq
