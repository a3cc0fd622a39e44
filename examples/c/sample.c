/* Samples images into a caller-owned buffer with the C API and writes them as a PNG grid.
 * Usage: sample_c MODEL_DIR OUT.png */
#include <diffuse/diffuse_c.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: sample_c MODEL_DIR OUT.png\n");
    return 2;
  }
  diffuse_model* model = NULL;
  if (diffuse_model_load(argv[1], "auto", &model) != DIFFUSE_OK) {
    fprintf(stderr, "sample_c: %s\n", diffuse_last_error());
    return 1;
  }
  diffuse_model_info info;
  diffuse_model_get_info(model, &info);
  diffuse_sample_options options;
  diffuse_sample_options_init(&options);
  options.n = 4;
  options.steps = 25;
  const size_t values = diffuse_sample_values(model, options.n);
  float* images = malloc(values * sizeof(float));
  int rc = 0;
  if (!images || diffuse_sample(model, &options, images, values) != DIFFUSE_OK ||
      diffuse_save_png_grid(argv[2], images, options.n, info.channels, info.height, info.width,
                            0) != DIFFUSE_OK) {
    fprintf(stderr, "sample_c: %s\n", images ? diffuse_last_error() : "out of memory");
    rc = 1;
  } else {
    printf("wrote %s (diffuse %s)\n", argv[2], diffuse_version());
  }
  free(images);
  diffuse_model_free(model);
  return rc;
}
