// Never lose a run (train/output_dir.h, the trainer's non-finite policy): a non-empty or input-model
// output_dir is refused before step 0, rotation only touches the current run, leftovers of interrupted saves
// and rotations are cleaned, a diverged run stops before saving non-finite weights, and
// --skip_nonfinite_steps skips such steps.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "miniseq/train/checkpoint.h"
#include "miniseq/train/metrics.h"
#include "miniseq/train/output_dir.h"
#include "miniseq/train/trainer.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

TrainArgs args(const std::string& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> flags = {"--max_steps",
                                    "3",
                                    "--learning_rate",
                                    "1e-3",
                                    "--logging_steps",
                                    "1",
                                    "--model_max_length",
                                    "16",
                                    "--per_device_train_batch_size",
                                    "1",
                                    "--save_steps",
                                    "1",
                                    "--output_dir",
                                    out};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return test::parse_train_args(flags);
}

std::string error_of(const TrainArgs& a, const Dataset& data) {
  try {
    run_training(test::tiny_setup(a, data));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<int64_t> steps_in(const std::string& out) {
  std::vector<int64_t> s;
  for (const auto& [step, dir] : run_checkpoints(out, "")) s.push_back(step);
  return s;
}

}  // namespace

TEST(OutputDir, NonEmptyIsRefusedUnlessResumedOrOverwritten) {
  test::TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 3);
  const std::string out = tmp.file("out");
  TrainArgs a = args(out, {"--max_steps", "5"});
  run_training(test::tiny_setup(a, data));
  EXPECT_EQ(steps_in(out), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  const std::string first_run = checkpoint_run_id(out + "/checkpoint-5");
  EXPECT_FALSE(first_run.empty());

  // Again into the same directory: refused before anything is written, naming what to do.
  const auto metrics_before = test::read_text(out + "/metrics.jsonl");
  TrainArgs b = args(out, {"--max_steps", "2", "--save_total_limit", "1"});
  const std::string msg = error_of(b, data);
  EXPECT_NE(msg.find("already exists and is not empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume_from_checkpoint True"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite_output_dir True"), std::string::npos) << msg;
  EXPECT_EQ(test::read_text(out + "/metrics.jsonl"), metrics_before);

  // With --overwrite_output_dir: the new run's rotation (limit 1) keeps its own newest checkpoint, never
  // deletes it for the old run's higher step numbers, and never deletes the old run's checkpoints either.
  b.overwrite_output_dir = true;
  run_training(test::tiny_setup(b, data));
  // The new run replaced the old run's checkpoint-1 and -2 (same names, as asked), rotated its own -1 out,
  // and left the old run's 3, 4, 5 alone.
  EXPECT_EQ(steps_in(out), (std::vector<int64_t>{2, 3, 4, 5}));
  const std::string second_run = checkpoint_run_id(out + "/checkpoint-2");
  EXPECT_NE(second_run, first_run);
  EXPECT_EQ(checkpoint_run_id(out + "/checkpoint-5"), first_run);
  EXPECT_EQ(run_checkpoints(out, second_run).size(), 1u);
  // --resume_from_checkpoint True resumes the latest run (its checkpoint-2), not the old run's checkpoint-5.
  EXPECT_EQ(fs::path(latest_checkpoint(out)).filename(), "checkpoint-2");
  TrainArgs c =
      args(out, {"--max_steps", "3", "--resume_from_checkpoint", "True", "--save_total_limit", "1"});
  const TrainResult r = run_training(test::tiny_setup(c, data));
  EXPECT_EQ(r.steps, 3);
  EXPECT_EQ(checkpoint_run_id(out + "/checkpoint-3"), second_run);  // overwritten by the resumed second run
  EXPECT_FALSE(fs::exists(out + "/checkpoint-2"));                  // rotated: the second run's older one
  EXPECT_TRUE(fs::exists(out + "/checkpoint-5"));                   // the first run's, untouched
}

TEST(OutputDir, ModelDirectoryAndUncreatablePathsAreRefused) {
  test::TempDir tmp;
  const Dataset data = test::random_blocks(4, 16, 131, 3);
  fs::copy(test::train_test_model(), tmp.file("model"));
  const auto weights = test::read_text(tmp.file("model/model.safetensors"));
  TrainArgs a = args(tmp.file("model"), {"--overwrite_output_dir", "True"});
  TrainSetup s = test::tiny_setup(a, data);
  s.model_dir = tmp.file("model");
  std::string msg;
  try {
    run_training(s);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("is the input model directory"), std::string::npos) << msg;
  EXPECT_EQ(test::read_text(tmp.file("model/model.safetensors")), weights);

  // A path that cannot be created (a file where a directory must be): a clear error, not "internal error".
  test::write_text(tmp.file("file"), "x");
  msg = error_of(args(tmp.file("file/out")), data);
  EXPECT_NE(msg.find("cannot create it"), std::string::npos) << msg;
  msg = error_of(args(tmp.file("file")), data);
  EXPECT_NE(msg.find("exists and is not a directory"), std::string::npos) << msg;

  // An existing directory that cannot be written (even by root: /proc/sys refuses new files): refused before step 0
  // by the probe write, not at the first save.
  if (fs::is_directory("/proc/sys")) {
    msg = error_of(args("/proc/sys", {"--overwrite_output_dir", "True"}), data);
    EXPECT_NE(msg.find("--output_dir /proc/sys is not writable"), std::string::npos) << msg;
  }

  // Too little free space for a checkpoint and the final model: refused up front.
  OutputDirRequest r;
  r.output_dir = tmp.file("big");
  r.checkpoint_bytes = uint64_t{1} << 62;
  r.final_model_bytes = 1;
  try {
    prepare_output_dir(r, "");
    ADD_FAILURE() << "no free-space refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("free, but a checkpoint"), std::string::npos) << e.what();
  }
}

TEST(OutputDir, LeftoversOfInterruptedSavesAreCleaned) {
  test::TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 3);
  const std::string out = tmp.file("out");
  run_training(test::tiny_setup(args(out, {"--max_steps", "2"}), data));
  // What a crash leaves (PID 999999 is not running): a save's temporary directory, a rotation's trash, and a
  // checkpoint moved aside for a replacement that never arrived.
  const std::string dead = ".999999";
  fs::create_directories(out + "/.tmp-checkpoint-3" + dead);
  test::write_text(out + "/.tmp-checkpoint-3" + dead + "/model.safetensors", "partial");
  fs::create_directories(out + "/.trash-checkpoint-1" + dead);
  fs::rename(out + "/checkpoint-2", out + "/.old-checkpoint-2" + dead);
  fs::create_directories(out + "/.tmp-keep");  // not miniseq's pattern: left alone
  TrainArgs b = args(out, {"--max_steps", "2", "--resume_from_checkpoint", "True"});
  run_training(test::tiny_setup(b, data));
  EXPECT_FALSE(fs::exists(out + "/.tmp-checkpoint-3" + dead));
  EXPECT_FALSE(fs::exists(out + "/.trash-checkpoint-1" + dead));
  EXPECT_FALSE(fs::exists(out + "/.old-checkpoint-2" + dead));
  EXPECT_TRUE(fs::exists(out + "/checkpoint-2/trainer_state.json"));  // restored, then resumed from
  EXPECT_TRUE(fs::exists(out + "/.tmp-keep"));
}

TEST(OutputDir, DivergenceStopsBeforeSavingAndSkipSkips) {
  test::TempDir tmp;
  const Dataset data = test::random_blocks(8, 16, 131, 3);
  // A learning rate of 1e37 leaves finite (huge) weights after step 1 and makes step 2's loss non-finite.
  const std::string out = tmp.file("out");
  TrainArgs a = args(out, {"--max_steps", "5", "--learning_rate", "1e37"});
  const TrainResult r = run_training(test::tiny_setup(a, data));
  EXPECT_EQ(r.nonfinite_step, 2);
  EXPECT_EQ(r.steps, 1);
  EXPECT_EQ(fs::path(r.last_good_checkpoint).filename(), "checkpoint-1");
  EXPECT_EQ(steps_in(out), (std::vector<int64_t>{1}));   // nothing saved from step 2 on
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));  // no final model either
  for (const auto& [name, w] : test::read_weights(out + "/checkpoint-1"))
    for (float x : w) ASSERT_TRUE(std::isfinite(x)) << name;

  // 1e38 overflows the first update itself (step size lr / (1 - β1) > FLT_MAX): the weights are not finite
  // after step 1, and no checkpoint is written from them.
  const std::string inf = tmp.file("inf");
  const TrainResult ri = run_training(test::tiny_setup(args(inf, {"--learning_rate", "1e38"}), data));
  EXPECT_EQ(ri.nonfinite_step, 1);
  EXPECT_TRUE(ri.last_good_checkpoint.empty());
  EXPECT_TRUE(steps_in(inf).empty());

  // --skip_nonfinite_steps True: every later step is non-finite here, so each is skipped without an update;
  // the run ends normally and its final weights are step 1's.
  const std::string out2 = tmp.file("skip");
  TrainArgs b = args(out2, {"--max_steps", "4", "--learning_rate", "1e37", "--skip_nonfinite_steps", "True"});
  const TrainResult s = run_training(test::tiny_setup(b, data));
  EXPECT_EQ(s.nonfinite_step, 0);
  EXPECT_EQ(s.skipped_steps, 3);
  EXPECT_EQ(s.steps, 4);
  EXPECT_EQ(test::read_weights(out2), test::read_weights(out2 + "/checkpoint-1"));

  // The CLI: exit status 4 and a message naming the step and the checkpoint to resume from.
  test::write_text(
      tmp.file("d.jsonl"), "{\"input_ids\": [" + [] {
        std::string ids;
        for (int i = 0; i < 200; ++i) ids += (i ? ", " : "") + std::to_string((i * 7 + 3) % 131);
        return ids;
      }() + "]}\n");
  const auto run =
      test::run_miniseq("train --low_rank_training False --model_name_or_path " + test::train_test_model().string() + " --data_path " +
                        tmp.file("d.jsonl") + " --output_dir " + tmp.file("cli") +
                        " --model_max_length 16 --max_steps 5 --learning_rate 1e37 --save_steps 1 " +
                        "--per_device_train_batch_size 1");
  EXPECT_EQ(run.status, 4) << run.out;
  EXPECT_NE(run.out.find("non-finite loss or gradient norm at step 2"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("checkpoint-1"), std::string::npos) << run.out;
}

// A mistyped --model_max_length is refused before the data is read or a block is laid out (it used to end in
// std::bad_alloc, or in unbounded growth of the padded block).
TEST(OutputDir, MistypedLengthsAreRefusedAtOnce) {
  test::TempDir tmp;
  test::write_text(tmp.file("d.jsonl"), "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n");
  const std::string base = "train --low_rank_training False --model_name_or_path " + test::train_test_model().string() +
                           " --data_path " + tmp.file("d.jsonl") + " --output_dir " + tmp.file("o") +
                           " --model_max_length ";
  const std::pair<const char*, const char*> cases[] = {
      {"99999999999999999999", "is out of range"},
      {"1e9", "expects an integer"},
      {"2147483648", "positions are 32-bit"},
      {"1000000000", "the run needs at least"},
      {"100000", "holds 11 tokens, less than one sequence of --model_max_length 100000"},
  };
  for (const auto& [len, want] : cases) {
    const auto r = test::run_miniseq(base + len);
    EXPECT_EQ(r.status, 2) << len << ": " << r.out;
    EXPECT_NE(r.out.find(want), std::string::npos) << len << ": " << r.out;
  }
  EXPECT_FALSE(fs::exists(tmp.file("o")));  // nothing created for a refused run
}

// The saved config.json names the dtype its weights were saved in (a fp32 save of a bf16 model said
// bfloat16).
TEST(OutputDir, SavedConfigNamesTheSavedDtype) {
  test::TempDir tmp;
  std::string ids;
  for (int i = 0; i < 100; ++i) ids += (i ? ", " : "") + std::to_string((i * 11 + 5) % 131);
  test::write_text(tmp.file("d.jsonl"), "{\"input_ids\": [" + ids + "]}\n");
  const std::string model = test::source_dir() + "/tests/data/golden/llama_bf16/model";
  for (const bool bf16 : {false, true}) {
    const std::string out = tmp.file(bf16 ? "bf16" : "fp32");
    const auto r = test::run_miniseq(
        "train --low_rank_training False --model_name_or_path " + model + " --data_path " + tmp.file("d.jsonl") + " --output_dir " +
        out + " --model_max_length 16 --max_steps 1 " +
        "--per_device_train_batch_size 1 --save_steps 1 --bf16 " + (bf16 ? "True" : "False"));
    ASSERT_EQ(r.status, 0) << r.out;
    for (const std::string& dir : {out, out + "/checkpoint-1"}) {
      const auto j = nlohmann::json::parse(test::read_text(dir + "/config.json"));
      EXPECT_EQ(j["torch_dtype"], bf16 ? "bfloat16" : "float32") << dir;
      if (j.contains("dtype")) {
        EXPECT_EQ(j["dtype"], j["torch_dtype"]) << dir;
      }
    }
  }
}

// What the log says without a terminal: a progress line on stderr after the first step, a line per save, a
// summary loss that is one of the logged ones, and a plain "nothing to train" when resuming a finished run.
TEST(OutputDir, TheLogSaysWhatHappened) {
  test::TempDir tmp;
  std::string ids;
  for (int i = 0; i < 200; ++i) ids += (i ? ", " : "") + std::to_string((i * 13 + 7) % 131);
  test::write_text(tmp.file("d.jsonl"), "{\"input_ids\": [" + ids + "]}\n");
  const std::string base =
      "train --low_rank_training False --model_name_or_path " + test::train_test_model().string() + " --data_path " +
      tmp.file("d.jsonl") + " --output_dir " + tmp.file("o") +
      " --model_max_length 16 --per_device_train_batch_size 1 --save_steps 2 --logging_steps 2";
  auto r = test::run_miniseq(base + " --max_steps 4");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("progress: step 1/4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("saved " + tmp.file("o") + "/checkpoint-2 in "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("saved " + tmp.file("o") + "/checkpoint-4 in "), std::string::npos) << r.out;
  const auto losses = test::logged(tmp.file("o"), "loss");
  ASSERT_EQ(losses.size(), 2u);
  char want[96];
  std::snprintf(want, sizeof want, "logged loss %.4f -> %.4f over 4 steps of this run", losses[0], losses[1]);
  EXPECT_NE(r.out.find(want), std::string::npos) << r.out;
  r = test::run_miniseq(base + " --max_steps 4 --resume_from_checkpoint True");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("nothing to train: the run is at step 4 of 4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no steps run: the run was already at step 4"), std::string::npos) << r.out;
}

// training.svg: loss, learning rate and memory panels with ticks; a flat series still gets distinct axis
// labels; the measured and planned memory are both drawn and labelled.
TEST(OutputDir, TrainingPlotHasTicksLearningRateAndLabelledMemory) {
  nlohmann::json log = nlohmann::json::array();
  for (int s = 1; s <= 5; ++s)
    log.push_back({{"step", s},
                   {"loss", 5.0 - 0.5 * s},
                   {"learning_rate", 1e-3 * s},
                   {"peak_memory_bytes", 200.0 * (1 << 20)}});
  const std::string svg = training_svg(log, size_t{40} << 20);
  EXPECT_NE(svg.find("learning rate"), std::string::npos);
  EXPECT_NE(svg.find("process peak RSS"), std::string::npos);
  EXPECT_NE(svg.find("planned arena"), std::string::npos);
  EXPECT_NE(svg.find("memory (MiB)"), std::string::npos);
  EXPECT_NE(svg.find(">200<"), std::string::npos);  // the flat measured line's value is a tick
  EXPECT_NE(svg.find(">40<"), std::string::npos);   // the planned one's too
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  // A flat series alone: its ticks are a range around the value, not one value repeated.
  const std::string flat =
      training_svg(nlohmann::json::array({{{"step", 1}, {"loss", 2.0}}, {{"step", 2}, {"loss", 2.0}}}));
  EXPECT_NE(flat.find(">1.9<"), std::string::npos) << flat;
  EXPECT_NE(flat.find(">2.1<"), std::string::npos) << flat;
}
