// The communicator's collectives on 2 and 4 ranks (CTest runs this program under mpirun, scripts/mpi-test.sh;
// run directly it tests the single-process communicator). Every rank makes every rank's inputs from (rank,
// seed), so each result is checked bit for bit against a serial computation: sums in rank order in fp32.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "miniseq/core/dtype.h"
#include "miniseq/dist/communicator.h"

namespace miniseq::dist {
namespace {

Communicator& comm() {
  return world(Device::CPU);
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Rank r's i-th input: values of very different magnitudes, so the order of a sum shows in its bits.
float value(int rank, int64_t i, uint64_t seed) {
  const uint64_t h = mix(seed * 1000003u + static_cast<uint64_t>(rank) * 7919u + static_cast<uint64_t>(i));
  const float unit = static_cast<float>(h >> 40) / static_cast<float>(1 << 24) - 0.5f;  // [-0.5, 0.5)
  const int e = static_cast<int>((h >> 8) % 24) - 12;
  return std::ldexp(unit, e);
}

std::vector<float> inputs(int rank, int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = value(rank, i, seed);
  return v;
}

// What every collective must equal: the inputs of ranks 0..P-1 summed in that order in fp32.
std::vector<float> serial_sum(int P, int64_t n, uint64_t seed) {
  std::vector<float> s = inputs(0, n, seed);
  for (int r = 1; r < P; ++r) {
    const auto x = inputs(r, n, seed);
    for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(i)] += x[static_cast<size_t>(i)];
  }
  return s;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return b;
}

Tensor view(std::vector<float>& v) {
  return Tensor(v.data(), {static_cast<int64_t>(v.size())});
}
Tensor view(std::vector<uint16_t>& v) {
  return Tensor(v.data(), {static_cast<int64_t>(v.size())}, DType::BF16);
}

void expect_bits(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": rank " << comm().rank() << ", first difference at " << first << ": "
                     << (bad ? got[first] : 0.f) << " vs " << (bad ? want[first] : 0.f);
}

// Sizes: nothing, fewer elements than ranks, remainders, and more than one staging piece (32 MiB: 8M floats).
const int64_t kSizes[] = {0, 1, 3, 1000, 12345, (int64_t{8} << 20) + 7};

TEST(Communicator, AllReduceEqualsTheSerialSumInRankOrder) {
  const int P = comm().size(), r = comm().rank();
  for (int64_t n : kSizes) {
    auto x = inputs(r, n, /*seed=*/1);
    comm().all_reduce_sum(view(x));
    expect_bits(x, serial_sum(P, n, 1), "all_reduce_sum f32");
  }
}

TEST(Communicator, AllReduceOfBf16RoundsOnce) {
  const int P = comm().size(), r = comm().rank();
  const int64_t n = 5001;
  // Inputs rounded to bf16; the sum is taken in fp32 and rounded once.
  std::vector<std::vector<float>> widened(static_cast<size_t>(P));
  for (int q = 0; q < P; ++q) {
    for (uint16_t b : to_bf16(inputs(q, n, 2))) widened[static_cast<size_t>(q)].push_back(bf16_to_f32(b));
  }
  std::vector<float> want = widened[0];
  for (int q = 1; q < P; ++q)
    for (int64_t i = 0; i < n; ++i)
      want[static_cast<size_t>(i)] += widened[static_cast<size_t>(q)][static_cast<size_t>(i)];
  auto x = to_bf16(inputs(r, n, 2));
  comm().all_reduce_sum(view(x));
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(x[static_cast<size_t>(i)], f32_to_bf16(want[static_cast<size_t>(i)])) << i;
}

TEST(Communicator, AllReduceIsBitIdenticalAcrossRanksAndRuns) {
  const int P = comm().size(), r = comm().rank();
  const int64_t n = 100003;
  auto a = inputs(r, n, 3), b = a;
  comm().all_reduce_sum(view(a));
  comm().all_reduce_sum(view(b));
  expect_bits(a, b, "two runs of the same all_reduce");
  // Every rank's result against rank 0's, sent as bytes.
  auto root = a;
  comm().broadcast(view(root), 0);
  expect_bits(a, root, "this rank's sum against rank 0's");
  (void)P;
}

TEST(Communicator, ReduceScatterGivesEachRankItsBlockOfTheSum) {
  const int P = comm().size(), r = comm().rank();
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{777}, (int64_t{3} << 20) + 1}) {
    auto in = inputs(r, P * n, 4);
    std::vector<float> out(static_cast<size_t>(n));
    comm().reduce_scatter_sum(view(in), view(out));
    const auto all = serial_sum(P, P * n, 4);
    expect_bits(out, std::vector<float>(all.begin() + r * n, all.begin() + (r + 1) * n),
                "reduce_scatter_sum");
  }
}

TEST(Communicator, ReduceAddsTheSumInRankOrderOnTheRootOnly) {
  const int P = comm().size(), r = comm().rank();
  for (int64_t n : {int64_t{0}, int64_t{5}, (int64_t{3} << 20) + 11}) {
    for (int root : {0, P - 1}) {
      const auto x = inputs(r, n, 7);
      // The root's out starts with values of its own: the sum is added to them.
      auto out = inputs(100 + r, n, 8);
      const auto before = out;
      comm().reduce_sum_into(Tensor(const_cast<float*>(x.data()), {n}), view(out), root);
      if (r != root) {
        expect_bits(out, before, "out on a rank that is not the root");
        continue;
      }
      auto want = serial_sum(P, n, 7);
      for (int64_t i = 0; i < n; ++i)
        want[static_cast<size_t>(i)] = before[static_cast<size_t>(i)] + want[static_cast<size_t>(i)];
      expect_bits(out, want, "reduce_sum_into");
    }
  }
}

TEST(Communicator, AllGatherConcatenatesInRankOrder) {
  const int P = comm().size(), r = comm().rank();
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1001}}) {
    auto in = inputs(r, n, 5);
    std::vector<float> out(static_cast<size_t>(P * n)), want;
    comm().all_gather(view(in), view(out));
    for (int q = 0; q < P; ++q) {
      const auto x = inputs(q, n, 5);
      want.insert(want.end(), x.begin(), x.end());
    }
    expect_bits(out, want, "all_gather");
    // In place: this rank's block already in the output.
    std::vector<float> inplace(static_cast<size_t>(P * n), 0.f);
    std::copy(in.begin(), in.end(), inplace.begin() + r * n);
    comm().all_gather(Tensor(inplace.data() + r * n, {n}), view(inplace));
    expect_bits(inplace, want, "all_gather in place");
  }
}

TEST(Communicator, AllToAllTransposesBlocks) {
  const int P = comm().size(), r = comm().rank();
  const int64_t n = 333;
  // Block j of rank r's input: inputs(r, ..., seed 100 + j).
  std::vector<uint16_t> in, want;
  for (int j = 0; j < P; ++j) {
    const auto b = to_bf16(inputs(r, n, 100 + static_cast<uint64_t>(j)));
    in.insert(in.end(), b.begin(), b.end());
    const auto w = to_bf16(inputs(j, n, 100 + static_cast<uint64_t>(r)));
    want.insert(want.end(), w.begin(), w.end());
  }
  std::vector<uint16_t> out(in.size());
  comm().all_to_all(view(in), view(out));
  EXPECT_EQ(out, want);
}

TEST(Communicator, BroadcastBarrierAndHostValues) {
  const int P = comm().size(), r = comm().rank();
  for (int root : {0, P - 1}) {
    auto x = inputs(r, 4099, 6);
    comm().broadcast(view(x), root);
    expect_bits(x, inputs(root, 4099, 6), "broadcast");
  }
  comm().barrier();
  // Host doubles: summed in rank order, the same bits on every rank.
  double v[3] = {1e16, static_cast<double>(r + 1), -1e16 * (r == P - 1)};
  comm().all_reduce_sum_f64(v, 3);
  double want[3] = {1e16, 1.0, 0.0};
  for (int q = 1; q < P; ++q) want[0] += 1e16, want[1] += q + 1;
  want[2] = -1e16;
  EXPECT_EQ(v[0], want[0]);
  EXPECT_EQ(v[1], want[1]);
  EXPECT_EQ(v[2], want[2]);
  char text[32] = {};
  if (r == 0) std::snprintf(text, sizeof text, "run-20261129-1");
  comm().broadcast_bytes(text, sizeof text, 0);
  EXPECT_STREQ(text, "run-20261129-1");
}

TEST(Communicator, SumBlocksInRankOrderAllowsOutputInPlace) {
  // Three blocks of 2: the sum written over block 1.
  std::vector<float> b = {1e8f, 1.f, 1.f, 2.f, -1e8f, 3.f};
  sum_blocks_in_rank_order(b.data(), 3, 2, 2, DType::F32, b.data() + 2);
  EXPECT_EQ(b[2], (1e8f + 1.f) + -1e8f);  // 0: the 1 is lost to rounding in rank order
  EXPECT_EQ(b[3], 6.f);
}

}  // namespace
}  // namespace miniseq::dist

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  miniseq::dist::Communicator& comm = miniseq::dist::world(miniseq::Device::CPU);
  // Only rank 0 reports; a failure on any rank fails the run on every rank.
  if (comm.rank() != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  double failed = rc != 0 ? 1.0 : 0.0;
  comm.all_reduce_sum_f64(&failed, 1);
  if (comm.rank() == 0 && failed > 0) std::fprintf(stderr, "%g of %d ranks failed\n", failed, comm.size());
  miniseq::dist::finalize_world();
  return failed > 0 ? 1 : 0;
}
