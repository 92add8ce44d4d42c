#include "miniseq/train/output_dir.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "miniseq/core/check.h"
#include "miniseq/core/memory_plan.h"
#include "miniseq/io/safetensors.h"

namespace miniseq {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRunFile = ".miniseq-run";

std::string new_run_id() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  std::random_device rd;
  char b[64];
  std::snprintf(b, sizeof b, "%lld-%d-%08x",
                (long long)std::chrono::duration_cast<std::chrono::seconds>(now).count(), (int)getpid(),
                rd());
  return b;
}

// A leftover of miniseq's own writer: PREFIX + "checkpoint-N." + PID, PID no longer running.
bool stale_leftover(const std::string& name, const std::string& prefix, std::string* checkpoint) {
  if (name.rfind(prefix + "checkpoint-", 0) != 0) return false;
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot <= prefix.size()) return false;
  const std::string pid = name.substr(dot + 1);
  if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) return false;
  const long p = std::stol(pid);
  if (p == getpid() || (kill(static_cast<pid_t>(p), 0) == 0 || errno == EPERM))
    return false;  // still running
  *checkpoint = name.substr(prefix.size(), dot - prefix.size());
  return true;
}

// Removes or restores what an interrupted save or rotation left in OUT.
std::vector<std::string> clean_leftovers(const fs::path& out) {
  std::vector<std::string> done;
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(out)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());
  for (const auto& path : entries) {
    const std::string name = path.filename().string();
    std::string cp;
    std::error_code ec;
    if (stale_leftover(name, ".tmp-", &cp) || stale_leftover(name, ".trash-", &cp)) {
      fs::remove_all(path, ec);
      MS_CHECK(!ec, path.string(), ": cannot remove this leftover of an interrupted save (", ec.message(),
               ")");
      done.push_back("removed " + name);
    } else if (stale_leftover(name, ".old-", &cp)) {
      // save_checkpoint moves an existing checkpoint-N aside before renaming its replacement into place.
      if (fs::exists(out / cp)) {
        fs::remove_all(path, ec);
        done.push_back("removed " + name);
      } else {
        fs::rename(path, out / cp, ec);
        done.push_back("restored " + cp + " from " + name);
      }
      MS_CHECK(!ec, path.string(), ": cannot clean this leftover of an interrupted save (", ec.message(),
               ")");
    }
  }
  return done;
}

bool same_directory(const fs::path& a, const fs::path& b) {
  std::error_code ec1, ec2;
  if (fs::exists(a) && fs::exists(b)) return fs::equivalent(a, b, ec1);
  return fs::weakly_canonical(a, ec1) == fs::weakly_canonical(b, ec2);
}

}  // namespace

std::string checkpoint_run_id(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / "trainer_state.json");
  if (!in) return "";
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (j.is_object() && j.contains("run_id") && j["run_id"].is_string())
      return j["run_id"].get<std::string>();
  } catch (const std::exception&) {
  }
  return "";
}

std::vector<std::pair<int64_t, std::string>> run_checkpoints(const std::string& output_dir,
                                                             const std::string& run_id) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(output_dir)) return out;
  for (const auto& e : fs::directory_iterator(output_dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    const std::string num = name.substr(11);
    if (num.empty() || num.size() > 18 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    if (!run_id.empty() && checkpoint_run_id(e.path().string()) != run_id) continue;
    out.push_back({std::stoll(num), e.path().string()});
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string latest_checkpoint(const std::string& output_dir) {
  std::string run;
  std::ifstream in(fs::path(output_dir) / kRunFile);
  if (in) std::getline(in, run);
  auto cps = run.empty() ? decltype(run_checkpoints("", "")){} : run_checkpoints(output_dir, run);
  if (cps.empty()) cps = run_checkpoints(output_dir, "");
  return cps.empty() ? std::string() : cps.back().second;
}

void prune_run_checkpoints(const std::string& output_dir, const std::string& run_id, int64_t limit) {
  if (limit <= 0) return;
  const auto cps = run_checkpoints(output_dir, run_id);
  for (size_t i = 0; i + static_cast<size_t>(limit) < cps.size(); ++i) {
    const fs::path cp(cps[i].second);
    const fs::path trash =
        cp.parent_path() / (".trash-" + cp.filename().string() + "." + std::to_string(getpid()));
    std::error_code ec;
    fs::rename(cp, trash, ec);
    MS_CHECK(!ec, cp.string(), ": cannot rotate this checkpoint out (", ec.message(), ")");
    fs::remove_all(trash, ec);
    MS_CHECK(!ec, trash.string(), ": cannot remove a rotated checkpoint (", ec.message(), ")");
  }
}

OutputDir prepare_output_dir(const OutputDirRequest& r, const std::string& resume_run_id) {
  MS_CHECK(!r.output_dir.empty(), "--output_dir is required");
  const fs::path out(r.output_dir);
  if (!r.model_dir.empty())
    MS_CHECK(!same_directory(out, r.model_dir), "--output_dir ", r.output_dir,
             " is the input model directory: miniseq never writes into the model it trains from; give a new "
             "directory");
  OutputDir result;
  std::error_code ec;
  if (fs::exists(out, ec)) {
    MS_CHECK(fs::is_directory(out), "--output_dir ", r.output_dir, " exists and is not a directory");
    result.cleaned = clean_leftovers(out);
    std::vector<std::string> entries;
    for (const auto& e : fs::directory_iterator(out)) entries.push_back(e.path().filename().string());
    std::sort(entries.begin(), entries.end());
    if (!entries.empty() && !r.resuming && !r.overwrite) {
      std::string shown;
      for (size_t i = 0; i < entries.size() && i < 5; ++i) shown += (i ? ", " : "") + entries[i];
      if (entries.size() > 5) shown += ", ... (" + std::to_string(entries.size()) + " entries)";
      const bool has_checkpoints = !run_checkpoints(r.output_dir, "").empty();
      fail("--output_dir ", r.output_dir, " already exists and is not empty (", shown,
           "): ", has_checkpoints ? "resume its run with --resume_from_checkpoint True, " : "",
           "give a new directory, or pass --overwrite_output_dir True to train into it anyway (its files are "
           "overwritten; checkpoints of earlier runs are kept and never rotated out)");
    }
  } else {
    fs::create_directories(out, ec);
    MS_CHECK(!ec, "--output_dir ", r.output_dir, ": cannot create it (", ec.message(),
             "); check the path and the permissions of its parent");
  }
  // Writable: a probe file, not the first save 500 steps in.
  const fs::path probe = out / (".miniseq-write-test." + std::to_string(getpid()));
  {
    std::ofstream f(probe);
    f << "probe\n";
    f.flush();
    MS_CHECK(f.good(), "--output_dir ", r.output_dir, " is not writable (", std::strerror(errno),
             "); fix its permissions or give another directory");
  }
  fs::remove(probe, ec);
  // Room for the next checkpoint (written beside the kept ones before the oldest is rotated out) and the
  // model.
  const uint64_t need = r.checkpoint_bytes + r.final_model_bytes;
  const fs::space_info space = fs::space(out, ec);
  if (!ec && need > 0)
    MS_CHECK(space.available >= need, "--output_dir ", r.output_dir, ": ", human_bytes(space.available),
             " free, but a checkpoint (", human_bytes(r.checkpoint_bytes), ") and the final model (",
             human_bytes(r.final_model_bytes), ") need ", human_bytes(need),
             "; free space, use another disk, or save fewer/smaller checkpoints (--save_strategy no, --bf16 "
             "True)");
  result.run_id = resume_run_id.empty() ? new_run_id() : resume_run_id;
  write_file_atomic((out / kRunFile).string(), result.run_id + "\n");
  return result;
}

}  // namespace miniseq
