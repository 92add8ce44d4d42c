// What a training run may do with its --output_dir, decided before step 0 so that no run is lost:
//  - never the input model directory, never a non-empty directory that is not being resumed (unless
//    --overwrite_output_dir True, as with Hugging Face's Trainer scripts);
//  - writable and with room for a checkpoint and the final model, checked up front (not at the first save);
//  - what an interrupted save or rotation of miniseq left behind is cleaned (only miniseq's own names, only
//    when the process that wrote them is gone): .tmp-checkpoint-*, .trash-checkpoint-*, and a checkpoint
//    moved aside for replacement (.old-checkpoint-*) is put back when its replacement never arrived;
//  - each run has an id (OUT/.miniseq-run, and "run_id" in every checkpoint's trainer_state.json); rotation
//    (--save_total_limit) removes only the current run's checkpoints, and --resume_from_checkpoint True takes
//    the newest checkpoint of the directory's latest run.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace miniseq {

struct OutputDirRequest {
  std::string output_dir;
  std::string model_dir;           // the input model ("" for built-in presets)
  bool resuming = false;           // --resume_from_checkpoint given
  bool overwrite = false;          // --overwrite_output_dir True
  uint64_t checkpoint_bytes = 0;   // planned size of one checkpoint (0: no checkpoints are saved)
  uint64_t final_model_bytes = 0;  // planned size of the final model files
};

struct OutputDir {
  std::string run_id;                // this run's id (a resumed run keeps its checkpoint's)
  std::vector<std::string> cleaned;  // leftovers removed or restored, for the log
};

// Checks and prepares OUT (created when missing). `resume_run_id`: the id of the checkpoint being resumed (""
// for a new run). Fails with a message that says what to do.
OutputDir prepare_output_dir(const OutputDirRequest& r, const std::string& resume_run_id);

// The run id recorded in a checkpoint's trainer_state.json ("" when absent or unreadable).
std::string checkpoint_run_id(const std::string& checkpoint_dir);

// checkpoint-N directories of OUT that belong to `run_id` (all of them when run_id is ""), sorted by N.
std::vector<std::pair<int64_t, std::string>> run_checkpoints(const std::string& output_dir,
                                                             const std::string& run_id);

// The checkpoint --resume_from_checkpoint True resumes: the newest of the run named in OUT/.miniseq-run, or
// the newest of all when no checkpoint carries that id (checkpoints written before run ids). "" when there is
// none.
std::string latest_checkpoint(const std::string& output_dir);

// --save_total_limit: removes the oldest checkpoints of `run_id` beyond `limit` (0 = keep all). Each is
// renamed to .trash-checkpoint-N.PID first, so a crash never leaves a half-deleted checkpoint that looks
// whole.
void prune_run_checkpoints(const std::string& output_dir, const std::string& run_id, int64_t limit);

}  // namespace miniseq
