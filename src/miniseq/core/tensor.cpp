#include "miniseq/core/tensor.h"

#include <sstream>

namespace miniseq {

std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

Shape::Shape(std::initializer_list<int64_t> d) {
  MS_CHECK(d.size() <= kMaxDims, "tensor rank ", d.size(), " exceeds ", kMaxDims);
  for (int64_t v : d) dims[static_cast<size_t>(ndim++)] = v;
}

Shape Shape::from(const std::vector<int64_t>& d) {
  MS_CHECK(d.size() <= kMaxDims, "tensor rank ", d.size(), " exceeds ", kMaxDims);
  Shape s;
  for (int64_t v : d) s.dims[static_cast<size_t>(s.ndim++)] = v;
  return s;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= dims[static_cast<size_t>(i)];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (dims[static_cast<size_t>(i)] != o.dims[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << dims[static_cast<size_t>(i)];
  os << ']';
  return os.str();
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  MS_DASSERT(shape.ndim >= 1 && begin >= 0 && begin + count <= shape[0]);
  int64_t row_elems = shape[0] == 0 ? 0 : numel() / shape[0];
  Tensor t = *this;
  t.shape.dims[0] = count;
  if (data) t.data = static_cast<char*>(data) + static_cast<size_t>(begin * row_elems) * dtype_size(dtype);
  return t;
}

Tensor Tensor::view(Shape s) const {
  MS_CHECK(s.numel() == numel(), "view ", s.str(), " does not match ", shape.str());
  Tensor t = *this;
  t.shape = s;
  return t;
}

}  // namespace miniseq
