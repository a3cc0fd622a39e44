#include "diffuse/dist/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <thread>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

volatile std::sig_atomic_t g_terminate = 0;
void on_term(int) {
  g_terminate = 1;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "stopped";
}

// The started ranks while this process waits for them.
struct Ranks {
  std::vector<pid_t> pids;  // -1 once reaped
  int running = 0;
  int failed_rank = -1, failed_status = 0;

  void signal_all(int sig) const {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, sig);
  }
};

// Null-terminated pointers into `strings`, as execve takes them.
std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// This process's environment with the torchrun variables of rank `rank` set.
std::vector<std::string> rank_environment(int rank, int nproc, int port) {
  const std::map<std::string, std::string> set = {
      {"RANK", std::to_string(rank)},        {"LOCAL_RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(nproc)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", "127.0.0.1"},          {"MASTER_PORT", std::to_string(port)}};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv(*e);
    if (!set.count(kv.substr(0, kv.find('=')))) env.push_back(kv);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  return env;
}

Ranks start_ranks(int nproc, const std::vector<std::string>& args, int port) {
  std::vector<std::string> argv_s = {"diffuse"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv = c_strings(argv_s);
  std::cout.flush();
  std::cerr.flush();
  // Each rank's environment is built before fork: the child only calls execve.
  std::vector<std::vector<std::string>> envs(nproc);
  for (int r = 0; r < nproc; ++r) envs[r] = rank_environment(r, nproc, port);
  Ranks ranks;
  ranks.pids.assign(nproc, -1);
  for (int r = 0; r < nproc; ++r) {
    std::vector<char*> envp = c_strings(envs[r]);
    const pid_t pid = ::fork();
    check(pid >= 0, "--nproc: cannot start rank ", r, ": ", std::strerror(errno));
    if (pid == 0) {
      ::execve("/proc/self/exe", argv.data(), envp.data());
      ::_exit(127);
    }
    ranks.pids[r] = pid;
  }
  ranks.running = nproc;
  return ranks;
}

// Marks the rank that was `pid` as ended; true when it is the first to fail.
bool record_exit(Ranks& ranks, pid_t pid, int status) {
  const int nproc = static_cast<int>(ranks.pids.size());
  bool first_failure = false;
  for (int r = 0; r < nproc; ++r) {
    if (ranks.pids[r] != pid) continue;
    ranks.pids[r] = -1;
    --ranks.running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && ranks.failed_rank < 0) {
      ranks.failed_rank = r;
      ranks.failed_status = status;
      std::cerr << "diffuse: rank " << r << " of " << nproc << " " << describe(status)
                << "; stopping the other ranks\n";
      first_failure = true;
    }
  }
  return first_failure;
}

// Returns when every rank has ended; the first failure, or a SIGTERM here, stops the others.
void wait_for_ranks(Ranks& ranks) {
  bool forwarded = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (ranks.running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      if (record_exit(ranks, pid, status)) {
        ranks.signal_all(SIGTERM);
        // Ranks blocked in a collective notice the dead peer by themselves; this is the
        // backstop for any that do not.
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      }
      continue;
    }
    if (g_terminate && !forwarded) {
      ranks.signal_all(SIGTERM);
      forwarded = true;
    }
    if (std::chrono::steady_clock::now() > deadline) ranks.signal_all(SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  check(fd >= 0, "cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  check(ok, "cannot find a free TCP port on 127.0.0.1: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

std::vector<std::string> own_args_without(const std::string& name) {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  check(f.good(), "/proc/self/cmdline: cannot read this process's arguments");
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> argv;
  for (size_t i = 0; i < all.size();) {
    const size_t end = all.find('\0', i);
    argv.push_back(all.substr(i, end - i));
    if (end == std::string::npos) break;
    i = end + 1;
  }
  std::vector<std::string> out;
  const std::string flag = "--" + name;
  for (size_t i = 1; i < argv.size(); ++i) {
    if (argv[i] == flag) {
      ++i;  // and its value
      continue;
    }
    if (argv[i].rfind(flag + "=", 0) == 0) continue;
    out.push_back(argv[i]);
  }
  return out;
}

int launch_local_ranks(int nproc, const std::vector<std::string>& args) {
  check(nproc >= 1, "--nproc must be >= 1, got ", nproc);
  const int port = free_tcp_port();
  Ranks ranks = start_ranks(nproc, args, port);
  // The ranks handle Ctrl-C themselves (they get it from the terminal); this process waits.
  auto prev_int = std::signal(SIGINT, SIG_IGN);
  auto prev_term = std::signal(SIGTERM, on_term);
  g_terminate = 0;
  wait_for_ranks(ranks);
  std::signal(SIGINT, prev_int);
  std::signal(SIGTERM, prev_term);
  check(ranks.failed_rank < 0, "--nproc ", nproc, ": rank ", ranks.failed_rank, " ",
        describe(ranks.failed_status), " (its own error is printed above)");
  return 0;
}

}  // namespace diffuse
