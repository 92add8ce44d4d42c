// Data parallelism (train/distributed.h) through the real launcher: `mpirun -np 2 miniseq train` against one
// process, stop requests and failures of one rank. Skipped when mpirun is missing or miniseq was built
// without MPI. The ranks run with one OpenMP thread each (the 2-core CI machine).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "miniseq/train/distributed.h"
#include "miniseq/train/output_dir.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

namespace miniseq {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Waits until the run has saved a checkpoint of any step: with the demo's --save_total_limit 1 an early one
// is rotated away within milliseconds when the machine is fast, so polling for one name can miss it.
bool wait_for_a_checkpoint(const std::string& out, int seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(seconds)) {
    std::error_code ec;
    for (fs::directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.rfind("checkpoint-", 0) == 0 && name.size() > 11 &&
          name.find_first_not_of("0123456789", 11) == std::string::npos)
        return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST(DataParallelOrder, RanksTakeInterleavedBlocksOfOneGlobalOrder) {
  const std::vector<int64_t> order = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};  // 11 blocks
  // B = 2, D = 2: global micro-batch m covers positions 4m .. 4m+3; rank r takes 4m + r and 4m + 2 + r.
  EXPECT_EQ(DataParallel::micro_per_epoch(11, 2, 2), 3);
  EXPECT_EQ(DataParallel::micro_blocks(order, 0, 2, 2, 0), (std::vector<int64_t>{10, 12}));
  EXPECT_EQ(DataParallel::micro_blocks(order, 0, 2, 2, 1), (std::vector<int64_t>{11, 13}));
  EXPECT_EQ(DataParallel::micro_blocks(order, 2, 2, 2, 0), (std::vector<int64_t>{18, 20}));
  EXPECT_EQ(DataParallel::micro_blocks(order, 2, 2, 2, 1), (std::vector<int64_t>{19}));
  // One rank: the single process's consecutive micro-batches.
  EXPECT_EQ(DataParallel::micro_blocks(order, 1, 3, 1, 0), (std::vector<int64_t>{13, 14, 15}));
  EXPECT_EQ(DataParallel::micro_per_epoch(11, 3, 1), 4);
}

TEST(DataParallelFlags, RefusesARankCountThatDoesNotMatch) {
  TrainArgs a = test::parse_train_args({"--data_parallel", "4"});
  EXPECT_NO_THROW(check_data_parallel(a, 4));
  try {
    check_data_parallel(a, 2);
    FAIL() << "accepted --data_parallel 4 on 2 processes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--data_parallel 4 but 2 processes were started"), std::string::npos)
        << e.what();
  }
  a = test::parse_train_args({"--optimizer_in_backward", "True"});
  EXPECT_NO_THROW(check_data_parallel(a, 1));
  EXPECT_NO_THROW(check_data_parallel(a, 2));
}

bool have_mpirun() {
  return std::system("command -v mpirun >/dev/null 2>&1") == 0;
}

// A process started in the background: mpirun with its ranks, output to a file.
struct Launch {
  pid_t pid = -1;
  std::string log;
  int status = -1;

  // `args`: everything after `mpirun -np N` (the miniseq binary is prepended).
  Launch(int np, const std::vector<std::string>& args, const std::string& log_path) : log(log_path) {
    std::vector<std::string> argv = {"mpirun", "--oversubscribe",  "--bind-to",   "none",
                                     "-np",    std::to_string(np), MINISEQ_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    pid = fork();
    if (pid == 0) {
      setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
      setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
      setenv("OMP_NUM_THREADS", "1", 1);
      FILE* f = std::freopen(log_path.c_str(), "w", stdout);
      if (!f) _exit(127);
      dup2(STDOUT_FILENO, STDERR_FILENO);
      setpgid(0, 0);  // its own process group: nothing it does reaches the test
      std::vector<char*> c;
      for (auto& s : argv) c.push_back(s.data());
      c.push_back(nullptr);
      execvp("mpirun", c.data());
      _exit(127);
    }
  }
  // Waits up to `seconds`; false when it is still running.
  bool wait(double seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        status = st;
        pid = -1;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  std::string output() const { return test::read_text(log); }
  ~Launch() {
    if (pid > 0) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

// The pid of rank `rank` among mpirun's children (its OMPI_COMM_WORLD_RANK), or -1.
pid_t rank_pid(pid_t mpirun, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 2, "%c %d", &state, &ppid) != 2 || ppid != mpirun) continue;
    std::ifstream env(e.path() / "environ", std::ios::binary);
    std::string var;
    while (std::getline(env, var, '\0'))
      if (var == want) return static_cast<pid_t>(std::stoi(name));
  }
  return -1;
}

// The demo preset, small: a tiny random Mistral on synthetic documents of 256 tokens.
std::vector<std::string> demo_args(const std::string& out, const std::vector<std::string>& extra) {
  std::vector<std::string> a = {"train", "--preset",           "demo", "--output_dir",
                                out,     "--model_max_length", "256",  "--logging_steps",
                                "1",     "--warmup_steps",     "1",    "--save_strategy",
                                "no"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string quoted(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += " '" + a + "'";
  return s;
}

// The largest relative difference of a tensor, ||a - b|| / ||b|| (test_train.cpp's measure).
double max_relative_difference(const std::string& dir_a, const std::string& dir_b) {
  const auto a = test::read_weights(dir_a), b = test::read_weights(dir_b);
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (const auto& [name, wb] : b) {
    const auto it = a.find(name);
    if (it == a.end()) {
      ADD_FAILURE() << "no tensor " << name << " in " << dir_a;
      continue;
    }
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < wb.size(); ++i) {
      const double d = static_cast<double>(it->second[i]) - wb[i];
      num += d * d, den += static_cast<double>(wb[i]) * wb[i];
    }
    worst = std::max(worst, std::sqrt(num / std::max(den, 1e-300)));
  }
  return worst;
}

#define SKIP_WITHOUT_MPI()                                                            \
  do {                                                                                \
    if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt install openmpi-bin)"; \
  } while (0)

TEST(DataParallelTrain, TwoRanksEqualOneProcessWithTwiceTheAccumulation) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  const std::vector<std::string> common = {"--max_steps",    "5",   "--learning_rate", "1e-3",
                                           "--weight_decay", "0.01"};
  auto dp_args = demo_args(tmp.file("dp2"), common);
  dp_args.insert(dp_args.end(), {"--gradient_accumulation_steps", "1"});
  Launch dp(2, dp_args, tmp.file("dp2.log"));
  ASSERT_TRUE(dp.wait(300)) << dp.output();
  ASSERT_EQ(dp.exit_code(), 0) << dp.output();
  EXPECT_NE(dp.output().find("x 2 data-parallel ranks"), std::string::npos) << dp.output();

  auto one_args = demo_args(tmp.file("one"), common);
  one_args.insert(one_args.end(), {"--gradient_accumulation_steps", "2"});
  const auto one = test::run_miniseq(quoted(one_args) + " 2>&1");
  ASSERT_EQ(one.status, 0) << one.out;

  // The same blocks per step, the gradients summed in another order: equal within fp32 rounding.
  const double diff = max_relative_difference(tmp.file("dp2"), tmp.file("one"));
  std::printf("5 steps, 2 ranks against 1 process with accumulation 2: weights differ by %.3g (relative)\n",
              diff);
  EXPECT_LT(diff, 1e-6);
  const auto loss_dp = test::logged(tmp.file("dp2"), "loss"),
             loss_one = test::logged(tmp.file("one"), "loss");
  ASSERT_EQ(loss_dp.size(), 5u);
  ASSERT_EQ(loss_one.size(), 5u);
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NEAR(loss_dp[i], loss_one[i], 1e-6 * std::fabs(loss_one[i])) << "step " << i + 1;
  // Only rank 0 wrote: one metrics file, one final model.
  EXPECT_TRUE(fs::exists(tmp.file("dp2/model.safetensors")));
}

// The optimizer in backward on 2 ranks: each gradient group is summed over the ranks as soon as the backward
// completes it, then updated. 13 steps run through the epoch's end (25 blocks: the last step has one block,
// and rank 1 runs a block with every label ignored so as to take part in every group's sum).
TEST(DataParallelTrain, OptimizerInBackwardOnTwoRanksEqualsOneProcessWithTwiceTheAccumulation) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  const std::vector<std::string> common = {"--max_steps",    "13",  "--learning_rate", "1e-3",
                                           "--weight_decay", "0.01"};
  auto fused_args = demo_args(tmp.file("fused"), common);
  fused_args.insert(fused_args.end(), {"--optimizer_in_backward", "True"});
  Launch fused(2, fused_args, tmp.file("fused.log"));
  ASSERT_TRUE(fused.wait(300)) << fused.output();
  ASSERT_EQ(fused.exit_code(), 0) << fused.output();
  Launch dp(2, demo_args(tmp.file("dp2"), common), tmp.file("dp2.log"));
  ASSERT_TRUE(dp.wait(300)) << dp.output();
  ASSERT_EQ(dp.exit_code(), 0) << dp.output();
  auto one_args = demo_args(tmp.file("one"), common);
  one_args.insert(one_args.end(), {"--gradient_accumulation_steps", "2"});
  const auto one = test::run_miniseq(quoted(one_args) + " 2>&1");
  ASSERT_EQ(one.status, 0) << one.out;

  const double diff = max_relative_difference(tmp.file("fused"), tmp.file("one"));
  std::printf(
      "13 steps, optimizer in backward on 2 ranks against 1 process with accumulation 2: weights "
      "differ by %.3g (relative)\n",
      diff);
  EXPECT_LT(diff, 1e-6);
  // Against data parallelism without it: the same sums of the same gradients, the same clipping norm (both
  // passes' gradients are the same bits): the same weights and losses.
  EXPECT_LT(max_relative_difference(tmp.file("fused"), tmp.file("dp2")), 1e-6);
  EXPECT_EQ(test::read_weights(tmp.file("fused")), test::read_weights(tmp.file("dp2")));
  EXPECT_EQ(test::logged(tmp.file("fused"), "loss"), test::logged(tmp.file("dp2"), "loss"));
  EXPECT_EQ(test::logged(tmp.file("fused"), "grad_norm"), test::logged(tmp.file("dp2"), "grad_norm"));
}

TEST(DataParallelTrain, ASignalToOneRankStopsEveryRankAtTheSameStep) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  Launch run(
      2,
      demo_args(tmp.file("out"), {"--max_steps", "100000", "--save_strategy", "steps", "--save_steps", "2"}),
      tmp.file("run.log"));
  // Once a first checkpoint shows the run is under way, SIGTERM to rank 1 only.
  ASSERT_TRUE(wait_for_a_checkpoint(tmp.file("out"), 120)) << run.output();
  const pid_t r1 = rank_pid(run.pid, 1);
  ASSERT_GT(r1, 0);
  kill(r1, SIGTERM);
  ASSERT_TRUE(run.wait(60)) << "the ranks did not stop: " << run.output();
  const std::string out = run.output();
  EXPECT_NE(out.find("interrupted by signal"), std::string::npos) << out;
  // Rank 0 saved the step where every rank stopped.
  const auto ckpts = run_checkpoints(tmp.file("out"), "");
  ASSERT_FALSE(ckpts.empty());
  EXPECT_NE(out.find("checkpoint saved in " + ckpts.back().second), std::string::npos) << out;
}

TEST(DataParallelTrain, AKilledRankEndsTheJobAndTheLastCheckpointResumes) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  Launch run(
      2,
      demo_args(tmp.file("out"), {"--max_steps", "100000", "--save_strategy", "steps", "--save_steps", "2"}),
      tmp.file("run.log"));
  ASSERT_TRUE(wait_for_a_checkpoint(tmp.file("out"), 120)) << run.output();
  const pid_t r1 = rank_pid(run.pid, 1);
  ASSERT_GT(r1, 0);
  kill(r1, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(run.wait(30)) << "rank 0 still runs 30 s after rank 1 was killed: " << run.output();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(seconds, 15.0);
  EXPECT_NE(run.exit_code(), 0);
  EXPECT_NE(run.output().find("signal 9"), std::string::npos)
      << run.output();  // mpirun names the killed rank

  // The newest checkpoint resumes, on two ranks again, and finishes two more steps.
  const auto ckpts = run_checkpoints(tmp.file("out"), "");
  ASSERT_FALSE(ckpts.empty());
  const std::string until = std::to_string(ckpts.back().first + 2);
  Launch resume(2, demo_args(tmp.file("out"), {"--max_steps", until, "--resume_from_checkpoint", "True"}),
                tmp.file("resume.log"));
  ASSERT_TRUE(resume.wait(120)) << resume.output();
  EXPECT_EQ(resume.exit_code(), 0) << resume.output();
  EXPECT_NE(resume.output().find("resumed from " + ckpts.back().second), std::string::npos)
      << resume.output();
  EXPECT_NE(resume.output().find("step " + until + " of the run"), std::string::npos) << resume.output();
}

TEST(DataParallelTrain, ARankThatHangsEndsTheJobAfterTheTimeout) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  Launch run(2,
             demo_args(tmp.file("out"), {"--max_steps", "100000", "--save_strategy", "steps", "--save_steps",
                                         "2", "--dist_timeout", "3"}),
             tmp.file("run.log"));
  ASSERT_TRUE(wait_for_a_checkpoint(tmp.file("out"), 120)) << run.output();
  const pid_t r1 = rank_pid(run.pid, 1);
  ASSERT_GT(r1, 0);
  kill(r1, SIGSTOP);  // alive but never answers
  ASSERT_TRUE(run.wait(40)) << "rank 0 still waits 40 s after rank 1 stopped: " << run.output();
  EXPECT_NE(run.exit_code(), 0);
  EXPECT_NE(run.output().find("rank 0 of 2 waited"), std::string::npos) << run.output();
}

// Supervised fine-tuning over ranks: each rank pads its own examples, the loss is normalized by the targets
// of all ranks. Two ranks x batch 1 x accumulation 2 cover the four records of tests/data/sft/ in one step:
// the loss is transformers' (tools/sft_reference.py), as for one process (test_sft.cpp).
TEST(DataParallelTrain, SupervisedFineTuningStepEqualsTransformers) {
  SKIP_WITHOUT_MPI();
  fs::path tok = fs::path(MINISEQ_SOURCE_DIR) / "../shared/data/tokenizers/mistral";
  if (const char* env = std::getenv("MINISEQ_TEST_DATA")) tok = fs::path(env) / "tokenizers/mistral";
  if (!fs::exists(tok / "tokenizer.json")) GTEST_SKIP() << "no Mistral tokenizer at " << tok;
  TempDir tmp;
  const std::string sft = test::source_dir() + "/tests/data/sft/";
  const auto ref = nlohmann::json::parse(test::read_text(sft + "reference.json"));
  const auto made = test::run_miniseq("tiny-model --out " + tmp.file("model") + " " +
                                      ref["tiny_model_args"].get<std::string>());
  ASSERT_EQ(made.status, 0) << made.out;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(tok / f, fs::path(tmp.file("model")) / f);
  std::vector<std::string> args = {
      "sft", "--low_rank_training=False", "--model_name_or_path=" + tmp.file("model"), "--data_path=" + sft + "records.json",
      "--output_dir=" + tmp.file("out"),
      "--model_max_length=" + std::to_string(ref["model_max_length"].get<int64_t>())};
  // Full attention, as transformers' reference (S²-Attn: docs/s2attn.md).
  for (const char* flag :
       {"--per_device_train_batch_size=1", "--gradient_accumulation_steps=2", "--max_steps=1",
        "--learning_rate=0", "--logging_steps=1", "--save_strategy=no", "--use_full_attn=True"})
    args.push_back(flag);
  Launch run(2, args, tmp.file("run.log"));
  ASSERT_TRUE(run.wait(120)) << run.output();
  ASSERT_EQ(run.exit_code(), 0) << run.output();
  EXPECT_NE(run.output().find("x 2 data-parallel ranks"), std::string::npos) << run.output();
  const auto loss = test::logged(tmp.file("out"), "loss");
  ASSERT_EQ(loss.size(), 1u);
  const double want = ref["loss"].get<double>();
  EXPECT_NEAR(loss[0], want, 1e-5 * want);
}

}  // namespace
}  // namespace miniseq
