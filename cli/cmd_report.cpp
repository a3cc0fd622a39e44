// diffuse report: one self-contained HTML page about a run.
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/report/report.h"

namespace fs = std::filesystem;

namespace diffuse::cli {

Command report_command() {
  Command c;
  c.name = "report";
  c.summary = "write an HTML report of a run (curves, sample grids, config, eval results)";
  c.usage = "diffuse report RUN [--out RUN/report.html]";
  c.description =
      "Reads RUN/log.jsonl (loss and images/s curves), RUN/grids/step_*.png (preview grids in "
      "step\n"
      "order), RUN/config.json and RUN/eval/*.json (NLL, FD-FMNIST, IS-FMNIST) and writes one "
      "HTML\n"
      "file with every image embedded, viewable offline. scripts/render_report.sh screenshots it.";
  c.options = {{"out", "", "HTML file to write (default: RUN/report.html)"},
               {"max-grids", "48", "show at most this many preview grids, evenly spaced"}};
  c.run = [](const Args& a) {
    check(a.positional.size() == 1, "give exactly one run folder (diffuse report RUN)");
    const auto run = a.positional[0];
    const auto out = a.has("out") ? a.str("out") : (fs::path(run) / "report.html").string();
    ReportOptions o;
    o.max_grids = a.integer("max-grids");
    check(o.max_grids >= 1, "--max-grids must be >= 1");
    check(fs::is_directory(run), run, " is not a folder (diffuse report RUN)");
    check_writable_output(out, 0, a.has("out") ? "--out" : "the report");
    write_report(run, out, o);
    std::cout << "wrote " << out << "\n";
    return 0;
  };
  return c;
}

}  // namespace diffuse::cli
