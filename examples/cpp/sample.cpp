// Samples a grid of images from a diffuse run or a diffusers model with the C++ API.
// Usage: sample MODEL_DIR OUT.png
#include <diffuse/diffuse.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 3) return std::cerr << "usage: sample MODEL_DIR OUT.png\n", 2;
  try {
    auto model = diffuse::Model::load(argv[1]);
    diffuse::SampleOptions options;
    options.n = 16;
    options.steps = 25;  // DDIM
    diffuse::save_png_grid(argv[2], model.sample(options));
    std::cout << "wrote " << argv[2] << " (diffuse " << diffuse::version() << ")\n";
  } catch (const diffuse::Error& e) {
    return std::cerr << "sample: " << e.what() << "\n", 1;
  }
}
