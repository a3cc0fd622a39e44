/* The C API from C (compiled as C99): load, sample, errors, buffers and the PNG writer.
 * Usage: test_c_api TINY_MODEL_DIR OUT_DIR; exits 0 when every check passes. */
#include <diffuse/diffuse_c.h>
#include <diffuse/version.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

static float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) {
    const float d = fabsf(a[i] - b[i]);
    if (d > m) m = d;
  }
  return m;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s TINY_MODEL_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  CHECK(strcmp(diffuse_version(), DIFFUSE_VERSION_STRING) == 0);
  CHECK(strcmp(diffuse_last_error(), "") == 0);

  diffuse_model* model = (diffuse_model*)1;
  CHECK(diffuse_model_load("/nonexistent/model", "cpu", &model) == DIFFUSE_ERROR_INPUT);
  CHECK(model == NULL);
  CHECK(strstr(diffuse_last_error(), "/nonexistent/model") != NULL);
  CHECK(diffuse_model_load(argv[1], "cpu", NULL) == DIFFUSE_ERROR_INPUT);

  if (diffuse_model_load(argv[1], "cpu", &model) != DIFFUSE_OK) {
    fprintf(stderr, "load failed: %s\n", diffuse_last_error());
    return 1;
  }
  diffuse_model_info info;
  CHECK(diffuse_model_get_info(model, &info) == DIFFUSE_OK);
  /* tests/data/diffusers_tiny/config.json: 2 channels, 16x16, num_class_embeds 5. */
  CHECK(info.channels == 2 && info.height == 16 && info.width == 16);
  CHECK(info.num_classes == 4);

  diffuse_sample_options o;
  diffuse_sample_options_init(&o);
  CHECK(strcmp(o.sampler, "ddim") == 0 && o.n == 16 && o.class_label == -1);
  o.n = 2;
  o.steps = 3;
  o.seed = 5;
  const size_t values = diffuse_sample_values(model, o.n);
  CHECK(values == 2 * 2 * 16 * 16);
  float* a = (float*)malloc(values * sizeof(float));
  float* b = (float*)malloc(values * sizeof(float));
  CHECK(diffuse_sample(model, &o, a, values - 1) == DIFFUSE_ERROR_BUFFER);
  CHECK(strstr(diffuse_last_error(), "buffer") != NULL);
  CHECK(diffuse_sample(model, &o, a, values) == DIFFUSE_OK);
  CHECK(diffuse_sample(model, &o, b, values) == DIFFUSE_OK);
  CHECK(max_abs_diff(a, b, values) == 0.0f); /* the seed fixes the images */
  int finite = 1;
  for (size_t i = 0; i < values; ++i) finite = finite && isfinite(a[i]);
  CHECK(finite);
  o.seed = 6;
  CHECK(diffuse_sample(model, &o, b, values) == DIFFUSE_OK);
  CHECK(max_abs_diff(a, b, values) > 1e-3f);

  o.class_label = 9;
  CHECK(diffuse_sample(model, &o, b, values) == DIFFUSE_ERROR_INPUT);
  CHECK(strstr(diffuse_last_error(), "out of range") != NULL);
  o.class_label = -1;
  o.sampler = "nope";
  CHECK(diffuse_sample(model, &o, b, values) == DIFFUSE_ERROR_INPUT);
  CHECK(strstr(diffuse_last_error(), "--sampler") != NULL);

  mkdir(argv[2], 0755);
  char path[4096];
  snprintf(path, sizeof path, "%s/grid.png", argv[2]);
  remove(path);
  CHECK(diffuse_save_png_grid(path, a, 2, 2, 16, 16, 0) == DIFFUSE_OK);
  FILE* f = fopen(path, "rb");
  unsigned char magic[8] = {0};
  CHECK(f && fread(magic, 1, 8, f) == 8 && memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0);
  if (f) fclose(f);
  CHECK(diffuse_save_png_grid(path, a, 2, 5, 16, 16, 0) == DIFFUSE_ERROR_INPUT);
  CHECK(strstr(diffuse_last_error(), "5-channel") != NULL);

  free(a);
  free(b);
  diffuse_model_free(model);
  diffuse_model_free(NULL);
  if (failures)
    fprintf(stderr, "%d checks failed\n", failures);
  else
    printf("c_api: all checks passed\n");
  return failures ? 1 : 0;
}
