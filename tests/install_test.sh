#!/usr/bin/env bash
# Installs a built tree into a temporary prefix and uses it as a consumer would: each installed
# public header compiles on its own against the prefix alone (so none includes an internal or
# uninstalled header, or LibTorch), the installed CLI runs, and examples/cpp and examples/c
# configure with find_package(diffuse), build and sample from the tiny model.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR TORCH_DIR MODEL_DIR
set -euo pipefail
build="$1" src="$2" torch_dir="$3" model="$4"
work="$(mktemp -d "${TMPDIR:-/tmp}/diffuse_install.XXXXXX")"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
fail() { echo "install_test: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log"; fail "cmake --install failed"; }
for f in bin/diffuse include/diffuse/diffuse.h include/diffuse/diffuse_c.h \
  include/diffuse/core/error.h include/diffuse/version.h; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
lib="$(find "$prefix" -name 'libdiffuse_api.a' | head -n1)"
[ -n "$lib" ] || fail "libdiffuse_api.a not installed"
if grep -q '^DIFFUSE_SHARED_C_API:BOOL=ON' "$build/CMakeCache.txt"; then
  [ -n "$(find "$prefix" -name 'libdiffuse_c.so')" ] || fail "libdiffuse_c.so not installed"
fi
cmake_dir="$(dirname "$lib")/cmake/diffuse"
for f in diffuseConfig.cmake diffuseConfigVersion.cmake diffuseTargets.cmake; do
  [ -e "$cmake_dir/$f" ] || fail "not installed: $cmake_dir/$f"
done
v="$("$prefix/bin/diffuse" --version)" || fail "the installed diffuse does not run"
[[ "$v" == "diffuse "[0-9]* ]] || fail "installed diffuse --version printed '$v'"

# Each header alone, with the prefix as the only include path: C++ for all, C for the C ones.
cxx="${CXX:-c++}" cc="${CC:-cc}"
while IFS= read -r h; do
  rel="${h#"$prefix/include/"}"
  printf '#include <%s>\n' "$rel" >"$work/h.cpp"
  "$cxx" -std=c++17 -fsyntax-only -I"$prefix/include" "$work/h.cpp" 2>"$work/h.log" ||
    { cat "$work/h.log"; fail "installed header $rel does not compile on its own (C++)"; }
  if grep -q '__cplusplus\|^#define' "$h" && ! grep -q 'namespace' "$h"; then
    cp "$work/h.cpp" "$work/h.c"
    "$cc" -std=c99 -fsyntax-only -I"$prefix/include" "$work/h.c" 2>"$work/h.log" ||
      { cat "$work/h.log"; fail "installed header $rel does not compile on its own (C)"; }
  fi
done < <(find "$prefix/include" -name '*.h' | sort)

# The examples, each its own project, against the installed package; LibTorch through the
# caller's CMAKE_PREFIX_PATH (find_dependency in diffuseConfig.cmake).
for ex in cpp c; do
  cmake -S "$src/examples/$ex" -B "$work/ex_$ex" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix;$(dirname "$torch_dir")" >"$work/cfg.log" 2>&1 ||
    { cat "$work/cfg.log"; fail "examples/$ex: configure against the installed package failed"; }
  cmake --build "$work/ex_$ex" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log"; fail "examples/$ex: build failed"; }
done
"$work/ex_cpp/sample" "$model" "$work/cpp.png" || fail "examples/cpp/sample failed"
"$work/ex_c/sample_c" "$model" "$work/c.png" || fail "examples/c/sample_c failed"
for png in cpp.png c.png; do
  [ "$(head -c 4 "$work/$png" | tail -c 3)" = PNG ] || fail "$png is not a PNG"
done
echo "install_test: installed, headers self-contained, both examples built and ran"
