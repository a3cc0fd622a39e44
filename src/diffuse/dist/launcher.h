// `--nproc N`: one command starts a whole local job. The program runs itself N times as ranks
// 0..N-1 (the torchrun environment variables set, MASTER_ADDR 127.0.0.1 and a free port), waits
// for them, and when one fails stops the others and reports which.
#pragma once
#include <string>
#include <vector>

namespace diffuse {

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice).
int free_tcp_port();

// Runs /proc/self/exe with `args` (argv without argv[0]) as `nproc` local ranks; returns 0 when all
// succeed. A failed rank stops the others and throws diffuse::Error naming the rank and its exit
// status. SIGINT reaches the ranks from the terminal; SIGTERM is passed on to them.
int launch_local_ranks(int nproc, const std::vector<std::string>& args);

// This process's argv without argv[0] (from /proc/self/cmdline), less `--name VALUE` and
// `--name=VALUE`.
std::vector<std::string> own_args_without(const std::string& name);

}  // namespace diffuse
