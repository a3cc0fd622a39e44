#include "commands.h"

namespace diffuse::cli {

std::vector<Command> all_commands() {
  return {train_command(), info_command()};
}

}  // namespace diffuse::cli
