// The subcommands of `diffuse`; each file cmd_*.cpp defines one or more of them.
#pragma once
#include <vector>

#include "options.h"

namespace diffuse::cli {

std::vector<Command> all_commands();

Command train_command();
Command sample_command();
Command encode_command();
Command interpolate_command();
Command eval_nll_command();
Command eval_train_classifier_command();
Command eval_fd_command();
Command report_command();
Command bench_command();
Command info_command();
Command ema_command();

}  // namespace diffuse::cli
