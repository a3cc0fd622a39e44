// Running the built `diffuse` binary from a test: its exit status and everything it printed.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "diffuse/io/atomic_file.h"

struct CliResult {
  int status;
  std::string output;
};

// `diffuse ARGS` with stdout and stderr captured through a temporary file named after tag.
inline CliResult run_cli(const std::string& args, const std::string& tag = "cli") {
  const auto log = std::filesystem::temp_directory_path() /
                   ("diffuse_" + tag + "_" + std::to_string(::getpid()) + ".log");
  const std::string cmd =
      std::string(DIFFUSE_CLI_PATH) + " " + args + " > " + log.string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  CliResult r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, diffuse::read_file(log.string())};
  ::unlink(log.c_str());
  return r;
}
