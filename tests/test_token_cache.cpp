// The token cache (train/token_cache.h): the same blocks as the in-memory dataset, built once and reused
// while the data and the tokenizer stay the same, rebuilt when either changes, and a run's memory independent
// of the data's size.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "miniseq/train/dataset.h"
#include "miniseq/train/token_cache.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

// A stand-in tokenizer: one id per byte, shifted by `shift`, modulo the vocabulary.
TokenizeFn bytes_tokenizer(int64_t vocab, int shift = 0) {
  return [vocab, shift](const std::vector<std::string>& texts) {
    std::vector<std::vector<int32_t>> out;
    for (const auto& t : texts) {
      out.emplace_back();
      for (unsigned char ch : t) out.back().push_back(static_cast<int32_t>((ch + shift) % vocab));
    }
    return out;
  };
}

TokenCache::IdsFn no_ids() {
  return [](const nlohmann::json&, int64_t) -> std::vector<int32_t> { return {}; };
}

}  // namespace

TEST(TokenCache, SameBlocksAsTheInMemoryDataset) {
  test::TempDir tmp;
  std::string jsonl;
  for (int d = 0; d < 40; ++d) {
    if (d % 3 == 2) {  // pre-tokenized documents of other lengths mix with text
      jsonl += "{\"input_ids\": [";
      for (int i = 0; i < 5 + d; ++i) {
        if (i) jsonl += ", ";
        jsonl += std::to_string((d * 7 + i) % 300);
      }
      jsonl += "]}\n";
    } else {
      jsonl += "{\"text\": \"document " + std::to_string(d) + std::string(static_cast<size_t>(d % 11), 'x') +
               "\"}\n";
    }
    if (d == 10) jsonl += "\n";  // a blank line
  }
  test::write_text(tmp.file("d.jsonl"), jsonl);
  for (const int64_t seq : {16, 37, 64}) {
    SCOPED_TRACE("seq " + std::to_string(seq));
    const DataSpec spec{seq, 300, 2, 0};
    const Dataset mem = Dataset::from_jsonl(tmp.file("d.jsonl"), spec, bytes_tokenizer(300));
    const Dataset cached =
        Dataset::from_jsonl_cached(tmp.file("d.jsonl"), spec, bytes_tokenizer(300), "k", false);
    ASSERT_EQ(cached.size(), mem.size());
    EXPECT_EQ(cached.tokens_in_documents(), mem.tokens_in_documents());
    std::vector<int64_t> all(static_cast<size_t>(mem.size()));
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    const TokenBatch a = mem.batch(all), b = cached.batch(all);
    EXPECT_EQ(a.input_ids, b.input_ids);
    EXPECT_EQ(a.labels, b.labels);
    EXPECT_EQ(cached.order(7, 1), mem.order(7, 1));
    fs::remove(tmp.file("d.jsonl.miniseq-tokens"));
  }
}

TEST(TokenCache, ReusedUntilTheDataOrTheTokenizerChanges) {
  test::TempDir tmp;
  const std::string data = tmp.file("d.jsonl");
  test::write_text(data, "{\"text\": \"hello world\"}\n{\"text\": \"second document\"}\n");
  auto open = [&](const std::string& key, int shift = 0, int64_t vocab = 300) {
    return TokenCache::open_or_build(data, key, 1, vocab, bytes_tokenizer(vocab, shift), no_ids(), false);
  };
  TokenCache c = open("tok-a");
  EXPECT_TRUE(c.built());
  EXPECT_EQ(c.size(), 11 + 1 + 15 + 1);  // ids and an EOS after each document
  EXPECT_TRUE(fs::exists(data + ".miniseq-tokens"));
  EXPECT_FALSE(open("tok-a").built());    // reused
  EXPECT_TRUE(open("tok-b", 1).built());  // another tokenizer
  std::vector<int32_t> ids(5);
  open("tok-b", 1).read(0, 5, ids.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{'h' + 1, 'e' + 1, 'l' + 1, 'l' + 1, 'o' + 1}));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  test::write_text(data, "{\"text\": \"hello world!\"}\n");  // the data changed
  TokenCache d = open("tok-b", 1);
  EXPECT_TRUE(d.built());
  EXPECT_EQ(d.size(), 13);
  // A truncated cache is rebuilt, not read.
  fs::resize_file(data + ".miniseq-tokens", 70);
  EXPECT_TRUE(open("tok-b", 1).built());
  // A vocabulary past 65536 keeps 32-bit ids.
  const TokenCache wide = TokenCache::open_or_build(
      data, "wide", -1, 100000,
      [](const std::vector<std::string>& t) {
        return std::vector<std::vector<int32_t>>(t.size(), {70000, 99999});
      },
      no_ids(), false);
  std::vector<int32_t> w(2);
  wide.read(0, 2, w.data());
  EXPECT_EQ(w, (std::vector<int32_t>{70000, 99999}));
  // Ids outside the vocabulary are refused with the line.
  try {
    TokenCache::open_or_build(data, "bad", -1, 50, bytes_tokenizer(300), no_ids(), false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d.jsonl:1: token id"), std::string::npos) << e.what();
  }
}

// A run's memory does not grow with its data: training on 64 MiB of documents peaks within 40 MiB of training
// on 1 MiB (the data, once tokenized, is read block by block from the cache; tokenizing holds a bounded
// batch).
TEST(TokenCache, RunMemoryDoesNotGrowWithTheData) {
  test::TempDir tmp;
  auto write = [&](const std::string& path, size_t bytes) {
    std::ofstream out(path);
    std::string ids;
    for (int i = 0; i < 2000; ++i) {
      if (i) ids += ",";
      ids += std::to_string((i * 31 + 7) % 131);
    }
    const std::string line = "{\"input_ids\": [" + ids + "]}\n";
    for (size_t n = 0; n < bytes; n += line.size()) out << line;
  };
  write(tmp.file("small.jsonl"), size_t{1} << 20);
  write(tmp.file("large.jsonl"), size_t{64} << 20);
  auto peak = [&](const std::string& data, const std::string& out) {
    const auto r = test::run_miniseq("train --low_rank_training False --model_name_or_path " + test::train_test_model().string() +
                                     " --data_path " + data + " --output_dir " + out +
                                     " --model_max_length 64 --max_steps 2 --per_device_train_batch_size 1 " +
                                     "--logging_steps 1 --save_strategy no");
    EXPECT_EQ(r.status, 0) << r.out;
    const auto p = test::logged(out, "peak_memory_bytes");
    return p.empty() ? 0.0 : p.back();
  };
  const double small = peak(tmp.file("small.jsonl"), tmp.file("o1"));
  const double large = peak(tmp.file("large.jsonl"), tmp.file("o2"));
  EXPECT_GT(small, 0);
  std::printf("peak RSS: %.1f MiB with 1 MiB of data, %.1f MiB with 64 MiB\n", small / (1 << 20),
              large / (1 << 20));
  EXPECT_LT(large - small, 40.0 * (1 << 20)) << "small " << small << " large " << large;
}
