// The C++ API's one exception type at its boundary.
#pragma once
#include <c10/util/Exception.h>

#include <exception>
#include <string>

#include "diffuse/core/error.h"

namespace diffuse::api {

// Runs f with every exception it throws turned into diffuse::Error, the API's one type, worded
// as the CLI words it (main.cpp's handlers).
template <typename F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(std::string("LibTorch error: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Error(e.what());
  }
}

}  // namespace diffuse::api
