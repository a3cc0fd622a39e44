// diffuse: train, sample and evaluate denoising diffusion models. `diffuse --help` is the manual.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"
#include "diffuse/version.h"

using namespace diffuse::cli;

namespace {

void print_overview(const std::vector<Command>& cmds) {
  std::cout << "diffuse " DIFFUSE_VERSION_STRING
               ": denoising diffusion models (DDPM, DDIM) in C++ on LibTorch "
            << diffuse::torch_version()
            << "\n\nusage: diffuse COMMAND [options]   |   diffuse --version\n\ncommands:\n";
  for (const auto& c : cmds) {
    std::string head = "  " + c.name;
    std::cout << head << std::string(head.size() < 26 ? 26 - head.size() : 1, ' ') << c.summary
              << "\n";
  }
  std::cout << "\n`diffuse COMMAND --help` lists a command's options and defaults.\n";
}

}  // namespace

int main(int argc, char** argv) {
  const auto cmds = all_commands();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_overview(cmds);
    return args.empty() ? 1 : 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::cout << "diffuse " DIFFUSE_VERSION_STRING " (LibTorch " << diffuse::torch_version()
              << ")\n";
    return 0;
  }
  // Two-word commands ("eval nll") match before one-word ones.
  const Command* found = nullptr;
  size_t used = 0;
  for (const auto& c : cmds) {
    const bool two = c.name.find(' ') != std::string::npos;
    if (two && args.size() >= 2 && c.name == args[0] + " " + args[1]) {
      found = &c;
      used = 2;
      break;
    }
    if (!two && c.name == args[0] && !found) {
      found = &c;
      used = 1;
    }
  }
  if (!found) {
    std::cerr << "diffuse: unknown command '" << args[0] << (args.size() > 1 ? " " + args[1] : "")
              << "' (see diffuse --help)\n";
    return 2;
  }
  std::vector<std::string> rest(args.begin() + used, args.end());
  for (const auto& a : rest)
    if (a == "--help" || a == "-h") {
      std::cout << help_text(*found);
      return 0;
    }
  try {
    auto parsed = parse_args(*found, rest);
    return found->run(parsed);
  } catch (const diffuse::Error& e) {
    std::cerr << "diffuse " << found->name << ": error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "diffuse " << found->name << ": LibTorch error: " << e.what_without_backtrace()
              << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "diffuse " << found->name << ": error: " << e.what() << "\n";
    return 3;
  }
}
