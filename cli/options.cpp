#include "options.h"

#include <sstream>

#include "diffuse/core/device.h"
#include "diffuse/core/error.h"
#include "diffuse/cpu/unet_engine.h"

namespace diffuse::cli {

bool Args::has(const std::string& name) const {
  return values_.count(name) > 0;
}

std::string Args::str(const std::string& name) const {
  auto it = values_.find(name);
  check(it != values_.end(), "--", name, " is required");
  return it->second;
}

int64_t Args::integer(const std::string& name) const {
  const auto s = str(name);
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == s.size() && !s.empty(), "--", name, ": expected an integer, got '", s, "'");
  return v;
}

double Args::number(const std::string& name) const {
  const auto s = str(name);
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == s.size() && !s.empty(), "--", name, ": expected a number, got '", s, "'");
  return v;
}

bool Args::flag(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() && it->second == "true";
}

Args parse_args(const Command& cmd, const std::vector<std::string>& argv) {
  Args args;
  std::map<std::string, const Option*> table;
  for (const auto& o : cmd.options) {
    table[o.name] = &o;
    if (!o.flag && !o.default_value.empty()) args.values_[o.name] = o.default_value;
  }
  for (size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      args.positional.push_back(a);
      continue;
    }
    auto name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = table.find(name);
    check(it != table.end(), "unknown option --", name, " for 'diffuse ", cmd.name,
          "' (see diffuse ", cmd.name, " --help)");
    const Option& o = *it->second;
    if (o.flag) {
      check(!has_value || value == "true" || value == "false", "--", name, " is a flag: use --",
            name, " alone");
      args.values_[name] = has_value ? value : "true";
    } else {
      if (!has_value) {
        check(i + 1 < argv.size(), "--", name, " needs a value");
        value = argv[++i];
      }
      args.values_[name] = value;
    }
    args.given_[name] = true;
  }
  for (const auto& o : cmd.options)
    check(!o.required || args.has(o.name), "--", o.name, " is required for 'diffuse ", cmd.name,
          "' (see diffuse ", cmd.name, " --help)");
  return args;
}

std::string help_text(const Command& cmd) {
  std::ostringstream os;
  os << "usage: " << cmd.usage << "\n\n" << cmd.summary << "\n";
  if (!cmd.description.empty()) os << "\n" << cmd.description << "\n";
  os << "\noptions:\n";
  for (const auto& o : cmd.options) {
    std::string head = "  --" + o.name + (o.flag ? "" : " V");
    os << head;
    const size_t col = 26;
    os << (head.size() < col ? std::string(col - head.size(), ' ') : "\n" + std::string(col, ' '));
    os << o.help;
    if (o.required) os << " (required)";
    if (!o.flag && !o.default_value.empty()) os << " [default: " << o.default_value << "]";
    os << "\n";
  }
  os << "  --help                  this text\n";
  return os.str();
}

Option no_ema_option() {
  return {"no-ema", "", "a run's raw weights instead of its EMA weights", true};
}

Option clip_x0_option() {
  return {"clip-x0", "", "clamp the model's predicted x_0 to [-1, 1] wherever it is used", true};
}

std::vector<Option> device_options() {
  return {{"device", "auto", kDeviceHelp},
          {"threads", "0", kThreadsHelp},
          {"precision", "auto", kPrecisionHelp},
          {"cpu-engine", "auto", kCpuEngineHelp}};
}

}  // namespace diffuse::cli

namespace diffuse::cli {

torch::Device setup_device(const Args& args) {
  auto device = parse_device(args.str("device"));
  configure_runtime(device, precision_of(args, device));
  const auto threads = args.integer("threads");
  check(threads >= 0, "--threads must be >= 0, got ", threads);
  if (threads > 0) torch::set_num_threads(static_cast<int>(threads));
  set_cpu_engine(parse_cpu_engine(args.str("cpu-engine")));
  return device;
}

Precision precision_of(const Args& args, const torch::Device& device) {
  return parse_precision(args.str("precision"), device);
}

}  // namespace diffuse::cli
