// One option table per subcommand drives parsing, defaults and --help, so each default is
// written once.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "diffuse/core/device.h"

namespace diffuse::cli {

struct Option {
  std::string name;           // without the leading "--"
  std::string default_value;  // "" = no default (optional unless required)
  std::string help;
  bool flag = false;  // takes no value; true when present
  bool required = false;
};

class Args {
 public:
  bool has(const std::string& name) const;  // given on the command line or defaulted
  bool given(const std::string& name) const { return given_.count(name) > 0; }
  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool flag(const std::string& name) const;
  const std::map<std::string, std::string>& values() const { return values_; }
  std::vector<std::string> positional;

 private:
  friend Args parse_args(const struct Command&, const std::vector<std::string>&);
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> given_;
};

struct Command {
  std::string name;     // "train", "eval nll", ...
  std::string summary;  // one line for `diffuse --help`
  std::string usage;    // e.g. "diffuse train --data SPEC --out DIR [options]"
  std::string description;
  std::vector<Option> options;
  std::function<int(const Args&)> run;
};

// Throws diffuse::Error for unknown options, missing values or missing required options.
Args parse_args(const Command& cmd, const std::vector<std::string>& argv);
std::string help_text(const Command& cmd);

// The options every command that loads a model or runs on a device shares, and what they set up:
// the device, thread count, precision (TF32 on or off) and cuDNN benchmark mode.
std::vector<Option> device_options();
// --no-ema: every command that loads a run's weights takes the EMA ones unless told otherwise.
Option no_ema_option();
// --clip-x0: every sampling command can clamp the predicted x_0 to the data range.
Option clip_x0_option();
torch::Device setup_device(const Args& args);
// --precision resolved for the device (setup_device has already applied its TF32 setting).
Precision precision_of(const Args& args, const torch::Device& device);

}  // namespace diffuse::cli
