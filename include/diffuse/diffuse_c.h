/* diffuse's C API: load a diffusion model and sample images into a buffer the caller owns, from
 * C or any language with a C FFI (Python ctypes, Rust, Go, C#).
 *
 * No C++ type or exception crosses it. Every call that can fail returns a diffuse_status; on
 * failure diffuse_last_error() holds the message the `diffuse` CLI prints for the same mistake
 * (per thread, valid until the thread's next failing call). Images are float32 in C order,
 * (n, channels, height, width), nominally in [-1, 1].
 *
 *   diffuse_model* m = NULL;
 *   if (diffuse_model_load("runs/fmnist", "cpu", &m) != DIFFUSE_OK)
 *     fprintf(stderr, "%s\n", diffuse_last_error());
 */
#ifndef DIFFUSE_DIFFUSE_C_H
#define DIFFUSE_DIFFUSE_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum diffuse_status {
  DIFFUSE_OK = 0,
  DIFFUSE_ERROR_INPUT = 1,   /* bad input: a file, option or argument (the CLI's exit code 2) */
  DIFFUSE_ERROR_RUNTIME = 2, /* anything else that failed (LibTorch, memory) */
  DIFFUSE_ERROR_BUFFER = 3   /* the output buffer is NULL or too small */
} diffuse_status;

typedef struct diffuse_model diffuse_model; /* opaque */

typedef struct diffuse_model_info {
  int64_t channels, height, width; /* of one image */
  int64_t num_classes;             /* 0: unconditional */
  int64_t timesteps;               /* T of the training process */
  int64_t step;                    /* training step, -1 when unknown */
} diffuse_model_info;

/* The options of `diffuse sample`. Fill with diffuse_sample_options_init, then change fields. */
typedef struct diffuse_sample_options {
  const char* sampler; /* ddpm | ddim | dpm++2m | euler | heun | euler-a (default ddim) */
  int64_t steps;       /* noise levels visited; 0: the sampler's default */
  int64_t n;           /* images (default 16) */
  int64_t batch;       /* images per network call (default 64; never changes an image) */
  uint64_t seed;       /* image i's noise comes from its own stream of the seed (default 0) */
  double eta;          /* DDIM only: 0 deterministic, 1 the DDPM posterior variance */
  int64_t class_label; /* class-conditional models: this class; -1: every class in turn */
  double guidance;     /* classifier-free guidance scale (default 1: none) */
  int clip_x0;         /* nonzero: clamp the predicted x_0 to [-1, 1] */
} diffuse_sample_options;

/* "0.1.0" */
const char* diffuse_version(void);
/* The message of this thread's last failed call; "" if none. */
const char* diffuse_last_error(void);

void diffuse_sample_options_init(diffuse_sample_options* options);

/* spec: a diffuse run folder, a checkpoint folder, a diffusers UNet2DModel or pipeline folder.
 * device: "auto", "cpu", "cuda", "cuda:N" (NULL: "auto"). EMA weights for run folders. On success
 * *model is a handle to free with diffuse_model_free. */
diffuse_status diffuse_model_load(const char* spec, const char* device, diffuse_model** model);
void diffuse_model_free(diffuse_model* model); /* NULL is fine */
diffuse_status diffuse_model_get_info(const diffuse_model* model, diffuse_model_info* info);

/* Values diffuse_sample writes for n images: n * channels * height * width. */
size_t diffuse_sample_values(const diffuse_model* model, int64_t n);
/* Writes options->n images to out, which holds out_values floats (at least
 * diffuse_sample_values(model, options->n)); options NULL: the defaults. */
diffuse_status diffuse_sample(const diffuse_model* model, const diffuse_sample_options* options,
                              float* out, size_t out_values);

/* A PNG grid of n (channels, height, width) images from values in [-1, 1], `columns` per row
 * (0: about square); 1 to 4 channels. */
diffuse_status diffuse_save_png_grid(const char* path, const float* images, int64_t n,
                                     int64_t channels, int64_t height, int64_t width,
                                     int64_t columns);

/* The same images as a float32 .npy of shape (n, channels, height, width). */
diffuse_status diffuse_save_npy(const char* path, const float* images, int64_t n, int64_t channels,
                                int64_t height, int64_t width);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_DIFFUSE_C_H */
