#include "diffuse/io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/safetensors.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

uint32_t crc32_of(const std::string& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t done = 0;
  while (done < bytes.size()) {
    const auto chunk = static_cast<uInt>(std::min<size_t>(bytes.size() - done, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + done), chunk);
    done += chunk;
  }
  return static_cast<uint32_t>(crc);
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

int64_t step_of(const std::string& name) {
  if (name.rfind("step_", 0) != 0) return -1;
  try {
    size_t used = 0;
    const auto v = std::stoll(name.substr(5), &used);
    return used == name.size() - 5 ? v : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

namespace {

// The checkpoint's files and manifest in `tmp`, each fsynced.
void write_checkpoint_folder(const fs::path& tmp, int64_t step, const CheckpointFiles& files) {
  nlohmann::json manifest;
  manifest["step"] = step;
  auto record = [&](const std::string& rel) {
    const auto bytes = read_file((tmp / rel).string());
    manifest["files"][rel] = {{"size", bytes.size()}, {"crc32", crc32_of(bytes)}};
  };
  for (const auto& [rel, tensors] : files.tensors) {
    fs::create_directories((tmp / rel).parent_path());
    save_safetensors((tmp / rel).string(), tensors);
    record(rel);
  }
  for (const auto& [rel, text] : files.texts) {
    fs::create_directories((tmp / rel).parent_path());
    write_file_atomic((tmp / rel).string(), text);
    record(rel);
  }
  for (auto& sub : fs::recursive_directory_iterator(tmp))
    if (sub.is_directory()) fsync_dir(sub.path());
  // The manifest is written last: a folder without one was interrupted and is never loaded.
  write_file_atomic((tmp / "manifest.json").string(), manifest.dump(1));
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, int64_t step, const CheckpointFiles& files,
                            int64_t keep) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path tmp = root / (".tmp-" + checkpoint_dir_name(step));
  const fs::path final_dir = root / checkpoint_dir_name(step);
  std::error_code ec;
  fs::create_directories(root, ec);
  check(!ec, root.string(), ": cannot create checkpoint folder: ", ec.message());
  remove_tree(tmp.string());
  try {
    write_checkpoint_folder(tmp, step, files);
  } catch (...) {
    // A full disk or an I/O error: the partial folder would only take space the next save needs.
    try {
      remove_tree(tmp.string());
    } catch (const Error&) {
    }
    throw;
  }
  if (fs::exists(final_dir)) {
    const fs::path old = root / (".old-" + checkpoint_dir_name(step));
    remove_tree(old.string());
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    remove_tree(old.string());
  } else {
    fs::rename(tmp, final_dir);
  }
  fsync_dir(root);
  auto all = list_checkpoints(run_dir);
  for (size_t i = static_cast<size_t>(std::max<int64_t>(keep, 1)); i < all.size(); ++i)
    remove_tree(all[i]);
  return final_dir.string();
}

std::vector<std::string> clean_checkpoint_leftovers(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::vector<std::string> done;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return done;
  std::vector<fs::path> leftovers;
  for (auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0 || name.rfind(".old-", 0) == 0) leftovers.push_back(e.path());
  }
  for (const auto& p : leftovers) {
    const auto name = p.filename().string();
    const fs::path final_dir = root / name.substr(5);
    if (name.rfind(".old-", 0) == 0 && !fs::exists(final_dir)) {
      fs::rename(p, final_dir);
      done.push_back("restored " + final_dir.string() + " from " + p.string() +
                     " (a replacement of it was interrupted)");
    } else {
      remove_tree(p.string());
      done.push_back("removed " + p.string() + " (left by an interrupted or failed checkpoint)");
    }
  }
  if (!leftovers.empty()) fsync_dir(root);
  return done;
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  for (auto& e : fs::directory_iterator(root)) {
    const auto step = step_of(e.path().filename().string());
    if (step >= 0 && e.is_directory() && fs::exists(e.path() / "manifest.json"))
      found.emplace_back(step, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

LoadedCheckpoint load_checkpoint(const std::string& dir, const std::vector<std::string>& only) {
  const fs::path root(dir);
  const auto manifest_path = (root / "manifest.json").string();
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(read_file(manifest_path));
  } catch (const nlohmann::json::exception& e) {
    fail(manifest_path, ": not valid JSON (", e.what(), ")");
  }
  check(manifest.is_object() && manifest.contains("step") && manifest.contains("files") &&
            manifest["files"].is_object(),
        manifest_path, ": manifest lacks step or files");
  LoadedCheckpoint out;
  out.dir = dir;
  out.step = manifest["step"].get<int64_t>();
  for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it) {
    const auto rel = it.key();
    const bool wanted =
        only.empty() || std::any_of(only.begin(), only.end(), [&](const std::string& prefix) {
          return rel.compare(0, prefix.size(), prefix) == 0;
        });
    if (!wanted) continue;
    const auto path = (root / rel).string();
    const auto bytes = read_file(path);
    const auto size = it.value().at("size").get<uint64_t>();
    check(bytes.size() == size, path, ": size ", bytes.size(), " bytes, the manifest says ", size,
          " (truncated or damaged)");
    check(crc32_of(bytes) == it.value().at("crc32").get<uint32_t>(), path,
          ": CRC-32 does not match the manifest (damaged)");
    if (rel.size() > 12 && rel.substr(rel.size() - 12) == ".safetensors")
      out.files.tensors[rel] = load_safetensors(path).tensors;
    else
      out.files.texts[rel] = bytes;
  }
  return out;
}

std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::string& run_dir,
                                                       std::vector<std::string>* warnings) {
  for (const auto& dir : list_checkpoints(run_dir)) {
    try {
      return load_checkpoint(dir);
    } catch (const Error& e) {
      if (warnings) warnings->push_back(std::string("skipping damaged checkpoint: ") + e.what());
    }
  }
  return std::nullopt;
}

}  // namespace diffuse
