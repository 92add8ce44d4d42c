#include "miniseq/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "miniseq/io/json_read.h"

namespace miniseq {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit
constexpr size_t kMaxFileName = 255;                // NAME_MAX of Linux file systems

// Every dtype the safetensors format defines, with its element size; only F32/BF16/F16 are converted.
size_t known_dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},   {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2},
      {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4},     {"F32", 4},     {"I64", 8}, {"U64", 8},
      {"F64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

int64_t SafetensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MS_CHECK(fd >= 0, path, ": cannot open safetensors file: ", std::strerror(errno));
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(path, ": file is ", size_, " bytes, too small for a safetensors header (needs at least 8)");
  }
  map_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  MS_CHECK(map_ != MAP_FAILED, path, ": cannot memory-map: ", std::strerror(errno));
  const auto* bytes = static_cast<const uint8_t*>(map_);

  try {
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
    MS_CHECK(header_len <= size_ - 8, path, ": header length ", header_len, " goes beyond the end of the file (",
             size_, " bytes); the file is truncated or not safetensors");
    MS_CHECK(header_len <= kMaxHeaderBytes, path, ": header length ", header_len, " exceeds the 100 MiB limit");
    MS_CHECK(header_len >= 2, path, ": header of ", header_len, " bytes cannot hold a JSON object");
    data_ = bytes + 8 + header_len;
    const size_t data_len = size_ - 8 - header_len;

    // Parse, catching duplicate top-level names (nlohmann keeps the last one silently).
    std::set<std::string> seen;
    std::string duplicate;
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1) {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second && duplicate.empty()) duplicate = jsonio::excerpt(k);
      }
      return true;
    };
    const char* hb = reinterpret_cast<const char*>(bytes + 8);
    const json header = jsonio::parse(std::string_view(hb, header_len), path, cb, "malformed JSON header");
    MS_CHECK(duplicate.empty(), path, ": tensor '", duplicate, "' appears twice in the header");
    MS_CHECK(header.is_object(), path, ": header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const json& v = it.value();
      if (name == "__metadata__") {
        MS_CHECK(v.is_object(), path, ": __metadata__ must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          MS_CHECK(m.value().is_string(), path, ": __metadata__ value of '", jsonio::excerpt(m.key(), 200),
                   "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      MS_CHECK(v.is_object(), path, ": entry for tensor '", jsonio::excerpt(name, 200), "' is not an object");
      SafetensorInfo t;
      t.name = name;
      MS_CHECK(v.contains("dtype") && v["dtype"].is_string(), path, ": tensor '", jsonio::excerpt(name, 200),
               "' has no dtype string");
      t.dtype_name = v["dtype"].get<std::string>();
      t.element_size = known_dtype_size(t.dtype_name);
      MS_CHECK(t.element_size, path, ": tensor '", jsonio::excerpt(name, 200), "' has unknown dtype '",
               jsonio::excerpt(t.dtype_name),
               "' (safetensors dtypes: BOOL U8 I8 I16 U16 I32 U32 I64 U64 F8_E4M3 F8_E5M2 F16 BF16 F32 F64)");
      t.is_float = dtype_from_name(t.dtype_name, &t.dtype);
      MS_CHECK(v.contains("shape") && v["shape"].is_array(), path, ": tensor '", jsonio::excerpt(name, 200),
               "' has no shape array");
      uint64_t numel = 1;
      for (const auto& d : v["shape"]) {
        MS_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), path,
                 ": tensor '", jsonio::excerpt(name, 200),
                 "' has a shape entry that is not a non-negative integer: ", jsonio::describe(d));
        uint64_t dim = d.get<uint64_t>();
        MS_CHECK(!mul_overflows(numel, dim, &numel) && numel <= (1ull << 62), path, ": tensor '",
                 jsonio::excerpt(name, 200), "' shape ", jsonio::excerpt(v["shape"].dump()), " overflows");
        t.shape.push_back(static_cast<int64_t>(dim));
      }
      MS_CHECK(t.shape.size() <= static_cast<size_t>(kMaxDims) || !t.is_float, path, ": tensor '",
               jsonio::excerpt(name, 200), "' has rank ", t.shape.size(), "; miniseq handles at most ",
               kMaxDims);
      const json& off = v.contains("data_offsets") ? v["data_offsets"] : json();
      MS_CHECK(
          off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
          path, ": tensor '", jsonio::excerpt(name, 200),
          "' needs data_offsets [begin, end] of non-negative integers");
      t.begin = off[0].get<uint64_t>();
      t.end = off[1].get<uint64_t>();
      MS_CHECK(t.begin <= t.end, path, ": tensor '", jsonio::excerpt(name, 200), "' has data_offsets [",
               t.begin, ", ", t.end, "] with begin after end");
      MS_CHECK(t.end <= data_len, path, ": tensor '", jsonio::excerpt(name, 200), "' data_offsets [", t.begin,
               ", ", t.end, "] run past the data section (", data_len,
               " bytes); the file is truncated or corrupt");
      uint64_t expect = 0;
      MS_CHECK(!mul_overflows(numel, t.element_size, &expect) && expect == t.end - t.begin, path,
               ": tensor '", jsonio::excerpt(name, 200), "' holds ", t.end - t.begin, " bytes but shape ",
               jsonio::excerpt(v["shape"].dump()), " of ", t.dtype_name, " needs ", numel * t.element_size);
      tensors_.push_back(std::move(t));
    }

    // The data must be one contiguous run: sorted by offset, each tensor starts where the previous ended.
    std::vector<const SafetensorInfo*> order;
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const SafetensorInfo* a, const SafetensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    size_t expected_begin = 0;
    const SafetensorInfo* prev = nullptr;
    for (const SafetensorInfo* t : order) {
      if (t->begin < expected_begin)
        fail(path, ": tensor '", jsonio::excerpt(t->name, 200), "' [", t->begin, ", ", t->end,
             ") overlaps tensor '", jsonio::excerpt(prev->name, 200), "' [", prev->begin, ", ", prev->end,
             ")");
      if (t->begin > expected_begin)
        fail(path, ": data is not contiguous: ", t->begin - expected_begin, " unused bytes before tensor '",
             jsonio::excerpt(t->name, 200), "' at offset ", expected_begin);
      expected_begin = t->end;
      prev = t;
    }
    MS_CHECK(expected_begin == data_len, path, ": ", data_len - expected_begin,
             " bytes after the last tensor are not described by the header; the file is corrupt");
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  } catch (...) {
    munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, size_);
}

const SafetensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::read(const std::string& name, const Tensor& dst) const {
  const SafetensorInfo* t = find(name);
  MS_CHECK(t, path_, ": no tensor named '", name, "'");
  MS_CHECK(t->is_float, path_, ": tensor '", name, "' has dtype ", t->dtype_name,
           "; miniseq reads F32, BF16 and F16 weights");
  MS_CHECK(Shape::from(t->shape) == dst.shape, path_, ": tensor '", name, "' has shape ",
           Shape::from(t->shape).str(), ", expected ", dst.shape.str());
  MS_CHECK(dst.device == Device::CPU, "internal: safetensors read into a non-CPU tensor");
  const uint8_t* src = data(*t);
  const size_t n = static_cast<size_t>(t->numel());
  if (reinterpret_cast<uintptr_t>(src) % t->element_size == 0 || t->dtype == dst.dtype) {
    convert(src, t->dtype, dst.data, dst.dtype, n);  // same dtype is a memcpy, alignment-free
  } else {
    // The data section is not aligned for this dtype (a header not padded to 8 bytes): go through a copy.
    std::vector<uint8_t> tmp(t->end - t->begin);
    std::memcpy(tmp.data(), src, tmp.size());
    convert(tmp.data(), t->dtype, dst.data, dst.dtype, n);
  }
}

// ---------------------------------------------------------------------------------------------------------------

SafetensorsModel::SafetensorsModel(const std::string& dir) : dir_(dir) {
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  MS_CHECK(fs::is_directory(dir), dir, ": not a directory (expected a Hugging Face model directory)");
  if (fs::exists(index_path)) {
    sharded_ = true;
    const json index = jsonio::parse_file(index_path.string());
    MS_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
             index_path.string(), ": no \"weight_map\" object");
    std::map<std::string, std::string> weight_map;
    std::map<std::string, size_t> shard_ids;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      MS_CHECK(it.value().is_string(), index_path.string(), ": weight_map entry '",
               jsonio::excerpt(it.key(), 200), "' is not a file name");
      std::string shard = it.value().get<std::string>();
      MS_CHECK(shard.find('/') == std::string::npos && shard.find('\0') == std::string::npos &&
                   shard != "." && shard != ".." && !shard.empty() && shard.size() <= kMaxFileName,
               index_path.string(), ": weight_map entry '", jsonio::excerpt(it.key()), "' names '",
               jsonio::excerpt(shard), "', which is not a file in this directory");
      weight_map[it.key()] = shard;
      if (!shard_ids.count(shard)) {
        const fs::path shard_path = fs::path(dir) / shard;
        std::error_code ec;
        const bool exists = fs::exists(shard_path, ec);
        MS_CHECK(!ec, index_path.string(), " names shard '", jsonio::excerpt(shard),
                 "', which cannot be read: ", ec.message());
        MS_CHECK(exists, index_path.string(), " names shard '", shard, "' (for tensor '",
                 jsonio::excerpt(it.key(), 200), "') but ", shard_path.string(),
                 " does not exist; the download is incomplete");
        shard_ids[shard] = files_.size();
        files_.push_back(std::make_unique<SafetensorsFile>(shard_path.string()));
      }
    }
    for (const auto& f : files_) {
      const std::string shard = fs::path(f->path()).filename().string();
      for (const auto& t : f->tensors()) {
        auto w = weight_map.find(t.name);
        MS_CHECK(w != weight_map.end(), f->path(), ": tensor '", jsonio::excerpt(t.name, 200),
                 "' is not listed in ", index_path.string());
        MS_CHECK(w->second == shard, f->path(), ": tensor '", jsonio::excerpt(t.name, 200),
                 "' is also here although the index puts it in ", w->second);
        entries_[t.name] = Entry{f.get(), &t};
      }
    }
    for (const auto& [name, shard] : weight_map)
      MS_CHECK(entries_.count(name), index_path.string(), " puts tensor '", jsonio::excerpt(name, 200),
               "' in ", shard, " but that shard does not contain it");
  } else {
    MS_CHECK(fs::exists(single_path), dir, ": no model.safetensors or model.safetensors.index.json (miniseq reads "
             "safetensors weights; convert .bin checkpoints with transformers' save_pretrained)");
    files_.push_back(std::make_unique<SafetensorsFile>(single_path.string()));
    for (const auto& t : files_.back()->tensors()) entries_[t.name] = Entry{files_.back().get(), &t};
  }
}

const SafetensorsModel::Entry* SafetensorsModel::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> n;
  for (const auto& [name, e] : entries_) n.push_back(name);
  return n;
}

void SafetensorsModel::read(const std::string& name, const Tensor& dst) const {
  const Entry* e = find(name);
  MS_CHECK(e, dir_, ": the model files have no tensor '", name, "'");
  e->file->read(name, dst);
}

size_t SafetensorsModel::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, e] : entries_) n += e.info->end - e.info->begin;
  return n;
}

// ---------------------------------------------------------------------------------------------------------------

namespace {

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path)
      : path_(path), tmp_(path + ".tmp." + std::to_string(getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    MS_CHECK(fd_ >= 0, tmp_, ": cannot create: ", std::strerror(errno));
  }
  ~AtomicFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  void write(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n) {
      ssize_t w = ::write(fd_, c, n);
      if (w < 0 && errno == EINTR) continue;
      MS_CHECK(w > 0, tmp_, ": write failed: ", std::strerror(errno), " (disk full?)");
      c += w;
      n -= static_cast<size_t>(w);
    }
  }
  void commit() {
    MS_CHECK(::fsync(fd_) == 0, tmp_, ": fsync failed: ", std::strerror(errno));
    ::close(fd_);
    fd_ = -1;
    MS_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot rename ", tmp_, " to ", path_, ": ",
             std::strerror(errno));
    std::string dir = fs::path(path_).parent_path().string();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

}  // namespace

void write_file_atomic(const std::string& path, const std::string& contents) {
  AtomicFile f(path);
  f.write(contents.data(), contents.size());
  f.commit();
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    MS_CHECK(names.insert(t.name).second, path, ": tensor '", t.name, "' would be written twice");
    MS_CHECK(t.data.device == Device::CPU && (t.data.data || t.data.numel() == 0), path,
             ": internal: tensor '", t.name, "' has no CPU data to write");
    size_t bytes = static_cast<size_t>(t.data.numel()) * dtype_size(t.stored);
    header[t.name] = {{"dtype", dtype_name(t.stored)},
                      {"shape", t.data.shape.to_vector()},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));

  AtomicFile f(path);
  f.write(len, 8);
  f.write(h.data(), h.size());
  std::vector<uint8_t> buf;
  constexpr size_t kBlock = 1 << 20;  // elements converted per write
  for (const auto& t : tensors) {
    const size_t n = static_cast<size_t>(t.data.numel());
    if (t.stored == t.data.dtype) {
      f.write(t.data.data, n * dtype_size(t.stored));
      continue;
    }
    buf.resize(std::min(n, kBlock) * dtype_size(t.stored));
    for (size_t i = 0; i < n; i += kBlock) {
      size_t m = std::min(kBlock, n - i);
      convert(static_cast<const uint8_t*>(t.data.data) + i * dtype_size(t.data.dtype), t.data.dtype, buf.data(),
              t.stored, m);
      f.write(buf.data(), m * dtype_size(t.stored));
    }
  }
  f.commit();
}

void write_safetensors_model(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata, size_t max_shard_bytes) {
  fs::create_directories(dir);
  // Greedy split in the given order: a new shard starts when the next tensor would overflow the current one.
  std::vector<std::vector<TensorToWrite>> shards(1);
  size_t cur = 0, total = 0;
  for (const auto& t : tensors) {
    size_t bytes = static_cast<size_t>(t.data.numel()) * dtype_size(t.stored);
    if (max_shard_bytes && cur > 0 && cur + bytes > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(t);
    cur += bytes;
    total += bytes;
  }
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  if (shards.size() == 1) {
    write_safetensors(single_path.string(), tensors, metadata);
    if (fs::exists(index_path)) fs::remove(index_path);  // an old sharded save would shadow the new file
    return;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
  std::set<std::string> written;
  const size_t n = shards.size();
  for (size_t s = 0; s < n; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, n);
    write_safetensors((fs::path(dir) / name).string(), shards[s], metadata);
    written.insert(name);
    for (const auto& t : shards[s]) index["weight_map"][t.name] = name;
  }
  write_file_atomic(index_path.string(), index.dump(2) + "\n");
  // The index now points at the new shards only: remove what an earlier save left behind.
  if (fs::exists(single_path)) fs::remove(single_path);
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string f = e.path().filename().string();
    if (f.rfind("model-", 0) == 0 && f.size() > 12 && f.substr(f.size() - 12) == ".safetensors" &&
        !written.count(f))
      fs::remove(e.path());
  }
}

}  // namespace miniseq
