// safetensors: the Hugging Face weight format. Layout: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
// then the data; offsets are relative to the start of the data. A model directory holds either model.safetensors
// or shards listed by model.safetensors.index.json ({"metadata": {...}, "weight_map": {name: shard file}}).
//
// Reading memory-maps the file and validates everything before any tensor is touched: header length, JSON,
// duplicate names, dtypes, shapes vs byte sizes, offsets in range, data contiguous without overlap or gaps.
// Writing is atomic (temporary file, fsync, rename), with the header padded to 8 bytes as the reference writer does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "miniseq/core/tensor.h"

namespace miniseq {

struct SafetensorInfo {
  std::string name;
  std::string dtype_name;     // as written in the file: "F32", "BF16", "I64", ...
  bool is_float = false;      // one of F32 / BF16 / F16 (the ones miniseq converts)
  DType dtype = DType::F32;   // valid when is_float
  size_t element_size = 0;
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte offsets relative to the data section
  int64_t numel() const;
};

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Opens and validates; throws miniseq::Error naming the file and the problem.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorInfo>& tensors() const { return tensors_; }  // in header order
  const SafetensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const uint8_t* data(const SafetensorInfo& t) const { return data_ + t.begin; }
  size_t file_size() const { return size_; }

  // Copies tensor `name` into dst (CPU), converting F32/BF16/F16 to dst.dtype. Checks the shape.
  void read(const std::string& name, const Tensor& dst) const;

 private:
  std::string path_;
  size_t size_ = 0;
  void* map_ = nullptr;
  const uint8_t* data_ = nullptr;
  std::vector<SafetensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a model directory: model.safetensors, or the shards of model.safetensors.index.json (every shard
// named in the index must exist, every tensor must be in the shard the index names, no tensor twice).
class SafetensorsModel {
 public:
  explicit SafetensorsModel(const std::string& dir);

  struct Entry {
    const SafetensorsFile* file;
    const SafetensorInfo* info;
  };
  const Entry* find(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  bool sharded() const { return sharded_; }
  void read(const std::string& name, const Tensor& dst) const;
  size_t total_bytes() const;

 private:
  std::string dir_;
  bool sharded_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> entries_;
};

// A tensor to write: CPU data, stored in the file as `stored` (converted from data.dtype if different).
struct TensorToWrite {
  std::string name;
  Tensor data;
  DType stored = DType::F32;
};

// Writes one safetensors file atomically.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes a model's weights into dir: model.safetensors when everything fits in max_shard_bytes (0 = no limit),
// otherwise model-0000k-of-0000n.safetensors plus model.safetensors.index.json (written last). Stale shards of an
// earlier save with other names are removed after the new index is in place.
void write_safetensors_model(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata = {}, size_t max_shard_bytes = 0);

// Writes a text file atomically (temporary file, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace miniseq
