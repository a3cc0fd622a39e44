// Checkpoints that survive a SIGKILL at any moment: each one is a folder
// RUN/checkpoints/step_NNNNNNNN/ written as .tmp-step_NNNNNNNN/ (every file fsynced), closed by a
// manifest.json holding each file's size and CRC-32, and only then renamed into place. Loading
// takes the newest folder whose manifest verifies; a damaged one is reported and skipped.
#pragma once
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace diffuse {

struct CheckpointFiles {
  // relative path -> tensors, written as safetensors (e.g.
  // "unet/diffusion_pytorch_model.safetensors")
  std::map<std::string, std::map<std::string, torch::Tensor>> tensors;
  // relative path -> text (e.g. "unet/config.json", "trainer_state.json")
  std::map<std::string, std::string> texts;
};

struct LoadedCheckpoint {
  int64_t step = 0;
  std::string dir;
  CheckpointFiles files;
};

std::string checkpoint_dir_name(int64_t step);  // "step_00001000"

// Writes the checkpoint for `step` under run_dir/checkpoints and deletes all but the newest `keep`.
// Returns the folder written.
std::string save_checkpoint(const std::string& run_dir, int64_t step, const CheckpointFiles& files,
                            int64_t keep);

// Leftovers of a save that failed or was killed, under run_dir/checkpoints: .tmp-step_N
// (incomplete: removed) and .old-step_N (a complete checkpoint moved aside while step_N was being
// replaced: moved back when step_N is missing, else removed). Call it only while holding the
// run's lock (RunLock), never beside a running save. Returns one line per folder handled.
std::vector<std::string> clean_checkpoint_leftovers(const std::string& run_dir);

// Complete checkpoint folders (with a manifest) under run_dir/checkpoints, newest first.
std::vector<std::string> list_checkpoints(const std::string& run_dir);

// Verifies the manifest (sizes, CRC-32, parse) and reads every file, or only those whose path
// starts with one of `only` (e.g. {"unet_ema/", "scheduler/"}: a model without its optimizer).
// Throws diffuse::Error naming the folder and the problem.
LoadedCheckpoint load_checkpoint(const std::string& dir, const std::vector<std::string>& only = {});

// The newest checkpoint that verifies; each damaged newer one adds a line to `warnings`.
std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::string& run_dir,
                                                       std::vector<std::string>* warnings);

}  // namespace diffuse
