// safetensors reading and writing: round trips (single file, sharded, each dtype) and every corruption case,
// each of which must give one specific error line and never crash or read out of bounds.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "miniseq/io/safetensors.h"
#include "support/tmpdir.h"

using namespace miniseq;
using miniseq::test::TempDir;

namespace {

// A raw safetensors file from a header string and a data section.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s + header + data;
}

// Expects opening `bytes` to fail with a message containing every fragment.
void expect_error(const TempDir& dir, const std::string& bytes, std::initializer_list<std::string> fragments) {
  const std::string path = dir.file("bad.safetensors");
  test::write_text(path, bytes);
  try {
    SafetensorsFile f(path);
    ADD_FAILURE() << "no error for a corrupt file; expected: " << *fragments.begin();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "error must be one line: " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "error must name the file: " << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

}  // namespace

TEST(Safetensors, RoundTripEachDtype) {
  TempDir dir;
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  std::vector<float> b = {0.5f, 0.25f};
  for (DType stored : {DType::F32, DType::BF16, DType::F16}) {
    const std::string path = dir.file("t.safetensors");
    write_safetensors(path, {{"a", Tensor(a.data(), {2, 3}), stored}, {"b.bias", Tensor(b.data(), {2}), stored}},
                      {{"format", "pt"}, {"loss", "1.5"}});
    SafetensorsFile f(path);
    ASSERT_EQ(f.tensors().size(), 2u);
    EXPECT_EQ(f.metadata().at("loss"), "1.5");
    const SafetensorInfo* ia = f.find("a");
    ASSERT_NE(ia, nullptr);
    EXPECT_EQ(ia->dtype, stored);
    EXPECT_EQ(ia->shape, (std::vector<int64_t>{2, 3}));
    std::vector<float> back(6);
    f.read("a", Tensor(back.data(), {2, 3}));
    for (size_t i = 0; i < a.size(); ++i) {
      float expect = a[i];
      if (stored == DType::BF16) expect = bf16_to_f32(f32_to_bf16(a[i]));
      if (stored == DType::F16) expect = f16_to_f32(f32_to_f16(a[i]));
      EXPECT_EQ(back[i], expect) << dtype_name(stored) << " element " << i;
    }
    // Reading into a bf16 destination converts too.
    std::vector<uint16_t> hb(2);
    f.read("b.bias", Tensor(hb.data(), {2}, DType::BF16));
    EXPECT_EQ(bf16_to_f32(hb[0]), 0.5f);
  }
}

TEST(Safetensors, ShardedRoundTripWithIndex) {
  TempDir dir;
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> ts;
  for (int i = 0; i < 7; ++i) {
    data.emplace_back(100, static_cast<float>(i));
    ts.push_back({"layer." + std::to_string(i) + ".weight", Tensor(data.back().data(), {10, 10}), DType::BF16});
  }
  const std::string model = dir.file("m");
  write_safetensors_model(model, ts, {{"format", "pt"}}, /*max_shard_bytes=*/450);
  EXPECT_TRUE(std::filesystem::exists(model + "/model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(model + "/model.safetensors"));
  SafetensorsModel m(model);
  EXPECT_TRUE(m.sharded());
  EXPECT_EQ(m.files().size(), 4u);  // 200 bytes per tensor, two per 450-byte shard
  EXPECT_EQ(m.names().size(), 7u);
  for (int i = 0; i < 7; ++i) {
    std::vector<float> back(100);
    m.read("layer." + std::to_string(i) + ".weight", Tensor(back.data(), {10, 10}));
    EXPECT_EQ(back[99], static_cast<float>(i));
  }
  auto index = nlohmann::json::parse(test::read_text(model + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), 7u * 200u);
  EXPECT_EQ(index["weight_map"]["layer.6.weight"], "model-00004-of-00004.safetensors");

  // Saving again unsharded replaces the index; saving sharded again removes stale shards.
  write_safetensors_model(model, ts, {}, 0);
  EXPECT_FALSE(std::filesystem::exists(model + "/model.safetensors.index.json"));
  EXPECT_EQ(SafetensorsModel(model).files().size(), 1u);
  write_safetensors_model(model, ts, {}, 900);
  EXPECT_FALSE(std::filesystem::exists(model + "/model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(model + "/model-00004-of-00004.safetensors"));
  EXPECT_EQ(SafetensorsModel(model).files().size(), 2u);
}

TEST(Safetensors, EmptyAndZeroSizedTensors) {
  TempDir dir;
  const std::string path = dir.file("z.safetensors");
  std::vector<float> none;
  write_safetensors(path, {{"empty", Tensor(none.data(), {0, 4}), DType::F32}});
  SafetensorsFile f(path);
  EXPECT_EQ(f.find("empty")->numel(), 0);
  test::write_text(path, raw_file("{}", ""));
  EXPECT_TRUE(SafetensorsFile(path).tensors().empty());
}

TEST(Safetensors, CorruptFilesGiveSpecificErrors) {
  TempDir dir;
  const std::string two = floats({1.0f, 2.0f});
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  // Sanity: the well-formed version opens.
  test::write_text(dir.file("good.safetensors"), raw_file("{" + ok_entry + "}", two));
  EXPECT_NO_THROW(SafetensorsFile(dir.file("good.safetensors")));

  expect_error(dir, "abc", {"too small"});
  {  // header length far beyond the file
    std::string s = raw_file("{}", "");
    s[5] = 0x10;
    expect_error(dir, s, {"header length", "beyond the end of the file"});
  }
  expect_error(dir, raw_file("{\"a\": [1,", ""), {"malformed JSON"});
  expect_error(dir, raw_file("[1,2]", ""), {"not a JSON object"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", two),
               {"'a'", "past the data section"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", two),
               {"'a'", "holds 8 bytes", "needs 12"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", two),
               {"'a'", "unknown dtype 'Q4'"});
  expect_error(dir, raw_file("{" + ok_entry + "," + ok_entry + "}", two), {"'a'", "twice"});
  expect_error(dir,
               raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        two),
               {"overlaps"});
  expect_error(dir,
               raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", two),
               {"not contiguous", "4 unused bytes"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", two),
               {"4 bytes after the last tensor"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", two),
               {"'a'", "non-negative"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", two),
               {"begin after end"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", two), {"data_offsets"});
  expect_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", two),
               {"overflows"});
  expect_error(dir, raw_file(R"({"__metadata__":{"x":1}})", ""), {"__metadata__"});
}

TEST(Safetensors, ShardedDirectoryErrors) {
  TempDir dir;
  std::vector<float> v(4, 1.0f);
  const std::string m = dir.file("m");
  // Shard 1 holds a and b, shard 2 holds c.
  write_safetensors_model(m,
                          {{"a", Tensor(v.data(), {4}), DType::F32}, {"b", Tensor(v.data(), {4}), DType::F32},
                           {"c", Tensor(v.data(), {4}), DType::F32}},
                          {}, 32);
  const std::string index = m + "/model.safetensors.index.json";
  auto expect_dir_error = [&](const std::string& fragment) {
    try {
      SafetensorsModel model(m);
      ADD_FAILURE() << "no error; expected " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  const std::string good_index = test::read_text(index);
  // A shard named in the index but absent.
  std::filesystem::rename(m + "/model-00002-of-00002.safetensors", m + "/moved");
  expect_dir_error("names shard 'model-00002-of-00002.safetensors'");
  std::filesystem::rename(m + "/moved", m + "/model-00002-of-00002.safetensors");
  // The index puts a tensor in a shard that does not hold it.
  auto j = nlohmann::json::parse(good_index);
  j["weight_map"]["d"] = "model-00001-of-00002.safetensors";
  test::write_text(index, j.dump());
  expect_dir_error("puts tensor 'd'");
  // A shard holds a tensor the index does not list.
  j = nlohmann::json::parse(good_index);
  j["weight_map"].erase("b");
  test::write_text(index, j.dump());
  expect_dir_error("tensor 'b' is not listed");
  // Malformed index.
  test::write_text(index, "{\"weight_map\": ");
  expect_dir_error("malformed JSON");
  // A path escaping the directory.
  j = nlohmann::json::parse(good_index);
  j["weight_map"]["a"] = "../x.safetensors";
  test::write_text(index, j.dump());
  expect_dir_error("not a file in this directory");
  // No weights at all.
  std::filesystem::remove_all(m);
  std::filesystem::create_directories(m);
  expect_dir_error("no model.safetensors");
}

TEST(Safetensors, WriteIsAtomic) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  std::vector<float> v = {1, 2, 3};
  write_safetensors(path, {{"x", Tensor(v.data(), {3}), DType::F32}});
  // A failing write (duplicate name) leaves the previous file intact and no temporary behind.
  EXPECT_THROW(write_safetensors(path, {{"x", Tensor(v.data(), {3}), DType::F32},
                                        {"x", Tensor(v.data(), {3}), DType::F32}}),
               Error);
  SafetensorsFile f(path);
  EXPECT_EQ(f.tensors().size(), 1u);
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}
