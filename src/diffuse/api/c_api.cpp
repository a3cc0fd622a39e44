// The C API (include/diffuse/diffuse_c.h) over the C++ API: each entry point catches everything,
// keeps the message for diffuse_last_error and returns a status.
#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "diffuse/diffuse.h"
#include "diffuse/diffuse_c.h"

struct diffuse_model {
  diffuse::Model model;
};

namespace {

thread_local std::string last_error;

diffuse_status failed(diffuse_status status, const std::string& message) {
  last_error = message;
  return status;
}

// Runs f, turning an exception into a status and the thread's last error.
template <typename F>
diffuse_status guarded(F&& f) {
  try {
    return f();
  } catch (const diffuse::Error& e) {
    const bool torch = std::strncmp(e.what(), "LibTorch error: ", 16) == 0;
    return failed(torch ? DIFFUSE_ERROR_RUNTIME : DIFFUSE_ERROR_INPUT, e.what());
  } catch (const std::bad_alloc&) {
    return failed(DIFFUSE_ERROR_RUNTIME, "out of memory");
  } catch (const std::exception& e) {
    return failed(DIFFUSE_ERROR_RUNTIME, e.what());
  } catch (...) {
    return failed(DIFFUSE_ERROR_RUNTIME, "unknown error");
  }
}

diffuse_status null_argument(const char* function, const char* argument) {
  return failed(DIFFUSE_ERROR_INPUT, std::string(function) + ": " + argument + " is NULL");
}

// n images of (channels, height, width) copied from a caller's buffer.
diffuse::Images images_from(const float* values, int64_t n, int64_t channels, int64_t height,
                            int64_t width) {
  diffuse::Images im(n, channels, height, width);
  std::copy(values, values + im.size(), im.data.begin());
  return im;
}

}  // namespace

extern "C" {

const char* diffuse_version(void) {
  return diffuse::version();
}

const char* diffuse_last_error(void) {
  return last_error.c_str();
}

void diffuse_sample_options_init(diffuse_sample_options* o) {
  if (!o) return;
  const diffuse::SampleOptions d;
  o->sampler = "ddim";
  o->steps = d.steps;
  o->n = d.n;
  o->batch = d.batch;
  o->seed = d.seed;
  o->eta = d.eta;
  o->class_label = -1;
  o->guidance = d.guidance;
  o->clip_x0 = d.clip_x0 ? 1 : 0;
}

diffuse_status diffuse_model_load(const char* spec, const char* device, diffuse_model** model) {
  if (!model) return null_argument("diffuse_model_load", "model");
  *model = nullptr;
  if (!spec) return null_argument("diffuse_model_load", "spec");
  return guarded([&] {
    diffuse::LoadOptions o;
    if (device) o.device = device;
    *model = new diffuse_model{diffuse::Model::load(spec, o)};
    return DIFFUSE_OK;
  });
}

void diffuse_model_free(diffuse_model* model) {
  delete model;
}

diffuse_status diffuse_model_get_info(const diffuse_model* model, diffuse_model_info* info) {
  if (!model) return null_argument("diffuse_model_get_info", "model");
  if (!info) return null_argument("diffuse_model_get_info", "info");
  return guarded([&] {
    const auto i = model->model.info();
    *info = {i.channels, i.height, i.width, i.num_classes, i.timesteps, i.step};
    return DIFFUSE_OK;
  });
}

size_t diffuse_sample_values(const diffuse_model* model, int64_t n) {
  if (!model || n < 0) return 0;
  const auto i = model->model.info();
  return static_cast<size_t>(n * i.channels * i.height * i.width);
}

diffuse_status diffuse_sample(const diffuse_model* model, const diffuse_sample_options* options,
                              float* out, size_t out_values) {
  if (!model) return null_argument("diffuse_sample", "model");
  diffuse_sample_options c;
  diffuse_sample_options_init(&c);
  if (options) c = *options;
  if (c.n < 1) return failed(DIFFUSE_ERROR_INPUT, "--n must be >= 1, got " + std::to_string(c.n));
  const size_t need = diffuse_sample_values(model, c.n);
  if (!out || out_values < need)
    return failed(DIFFUSE_ERROR_BUFFER, "diffuse_sample: the output buffer holds " +
                                            std::to_string(out ? out_values : 0) + " floats, " +
                                            std::to_string(c.n) + " images need " +
                                            std::to_string(need));
  return guarded([&] {
    diffuse::SampleOptions o;
    o.sampler = c.sampler ? c.sampler : "ddim";
    o.steps = c.steps;
    o.n = c.n;
    o.batch = c.batch;
    o.seed = c.seed;
    o.eta = c.eta;
    if (c.class_label >= 0) o.classes = {c.class_label};
    o.guidance = c.guidance;
    o.clip_x0 = c.clip_x0 != 0;
    const auto images = model->model.sample(o);
    std::copy(images.data.begin(), images.data.end(), out);
    return DIFFUSE_OK;
  });
}

diffuse_status diffuse_save_png_grid(const char* path, const float* images, int64_t n,
                                     int64_t channels, int64_t height, int64_t width,
                                     int64_t columns) {
  if (!path) return null_argument("diffuse_save_png_grid", "path");
  if (!images) return null_argument("diffuse_save_png_grid", "images");
  return guarded([&] {
    diffuse::save_png_grid(path, images_from(images, n, channels, height, width), columns);
    return DIFFUSE_OK;
  });
}

diffuse_status diffuse_save_npy(const char* path, const float* images, int64_t n, int64_t channels,
                                int64_t height, int64_t width) {
  if (!path) return null_argument("diffuse_save_npy", "path");
  if (!images) return null_argument("diffuse_save_npy", "images");
  return guarded([&] {
    diffuse::save_npy(path, images_from(images, n, channels, height, width));
    return DIFFUSE_OK;
  });
}

}  // extern "C"
