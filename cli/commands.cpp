#include "commands.h"

namespace diffuse::cli {

std::vector<Command> all_commands() {
  return {train_command(),       sample_command(),   encode_command(),
          interpolate_command(), eval_nll_command(), eval_train_classifier_command(),
          eval_fd_command(),     report_command(),   bench_command(),
          ema_command(),         info_command()};
}

}  // namespace diffuse::cli
