# diffuse as a library: the public headers (include/diffuse: diffuse.h, the C++ API; diffuse_c.h,
# the C API), the install rules and the CMake package (find_package(diffuse) -> diffuse::diffuse),
# and with DIFFUSE_SHARED_C_API the shared libdiffuse_c.so for other languages. Included by
# CMakeLists.txt after the module libraries.
#
# What is installed: the static module libraries (libdiffuse_<module>.a, the API's diffuse_api
# among them) behind the one target diffuse::diffuse, so a consumer links exactly what the CLI
# links and needs only LibTorch (found again through find_dependency) and zlib at link time;
# libdiffuse_c.so, which holds the C API and what sampling needs; and the CLI.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(DIFFUSE_PUBLIC_INCLUDES
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_include_directories(diffuse_api PUBLIC ${DIFFUSE_PUBLIC_INCLUDES})
set_target_properties(diffuse_api PROPERTIES EXPORT_NAME diffuse)
add_library(diffuse::diffuse ALIAS diffuse_api)
# Only main.cpp prints the version; a directory on every CLI file would recompile them all.
set_source_files_properties(${PROJECT_SOURCE_DIR}/cli/main.cpp PROPERTIES
  INCLUDE_DIRECTORIES ${PROJECT_BINARY_DIR}/include)

# (TORCH_LIBRARY may name another LibTorch found on the system paths; TORCH_INSTALL_PREFIX is the
# one whose TorchConfig.cmake was read.)
set(DIFFUSE_TORCH_LIB_DIR "${TORCH_INSTALL_PREFIX}/lib")
if(DIFFUSE_SHARED_C_API)
  # Loading a model and sampling: the C API over the C++ API's model half (no training).
  add_library(diffuse_c SHARED ${PROJECT_SOURCE_DIR}/src/diffuse/api/c_api.cpp
    ${PROJECT_SOURCE_DIR}/src/diffuse/api/model.cpp)
  target_include_directories(diffuse_c PRIVATE ${DIFFUSE_PUBLIC_INCLUDES})
  target_link_libraries(diffuse_c PRIVATE diffuse_pipeline)
  target_precompile_headers(diffuse_c REUSE_FROM diffuse_pch)
  set_target_properties(diffuse_c PROPERTIES VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR} INSTALL_RPATH_USE_LINK_PATH ON
    INSTALL_RPATH "${DIFFUSE_TORCH_LIB_DIR}")
  install(TARGETS diffuse_c LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

# The installed programs find LibTorch where they were built against: its libraries reach the link
# line partly as raw flags (torch_cuda), which INSTALL_RPATH_USE_LINK_PATH does not see.
set_target_properties(diffuse PROPERTIES INSTALL_RPATH "${DIFFUSE_TORCH_LIB_DIR}"
  INSTALL_RPATH_USE_LINK_PATH ON)
install(TARGETS diffuse RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
set(DIFFUSE_EXPORTED diffuse_pch)
foreach(m ${DIFFUSE_MODULES})
  list(APPEND DIFFUSE_EXPORTED diffuse_${m})
endforeach()
if(TARGET diffuse_kernels)
  list(APPEND DIFFUSE_EXPORTED diffuse_kernels)
endif()
install(TARGETS ${DIFFUSE_EXPORTED} EXPORT diffuseTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
# Public headers: include/diffuse, the generated version.h, and core/error.h (diffuse::Error),
# which diffuse.h includes and which includes only the standard library.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/diffuse DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/diffuse/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/diffuse)
install(FILES ${PROJECT_SOURCE_DIR}/src/diffuse/core/error.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/diffuse/core)

set(DIFFUSE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/diffuse)
install(EXPORT diffuseTargets NAMESPACE diffuse:: DESTINATION ${DIFFUSE_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/diffuseConfig.cmake.in
  ${PROJECT_BINARY_DIR}/diffuseConfig.cmake INSTALL_DESTINATION ${DIFFUSE_CMAKE_DIR})
# 0.x: a minor version may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/diffuseConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/diffuseConfig.cmake
  ${PROJECT_BINARY_DIR}/diffuseConfigVersion.cmake DESTINATION ${DIFFUSE_CMAKE_DIR})

if(DIFFUSE_BUILD_TESTS)
  set(DIFFUSE_TINY_MODEL ${PROJECT_SOURCE_DIR}/tests/data/diffusers_tiny)
  add_dependencies(test_api diffuse)  # compares with the CLI's output
  # The C API from C: compiled as C99 against the public header alone.
  add_executable(test_c_api ${PROJECT_SOURCE_DIR}/tests/c_api_test.c)
  set_target_properties(test_c_api PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON)
  target_link_libraries(test_c_api PRIVATE diffuse_api)
  add_test(NAME c_api COMMAND test_c_api ${DIFFUSE_TINY_MODEL} ${PROJECT_BINARY_DIR}/test_c_api_out)
  set(DIFFUSE_LIBRARY_TESTS c_api)
  if(DIFFUSE_SHARED_C_API)
    # ... and from Python through ctypes (the standard library only) on libdiffuse_c.so.
    find_program(DIFFUSE_PYTHON NAMES python3 HINTS ${PROJECT_SOURCE_DIR}/.venv/bin NO_DEFAULT_PATH)
    find_program(DIFFUSE_PYTHON NAMES python3)
    add_test(NAME c_api_python COMMAND ${DIFFUSE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/c_api_test.py
      $<TARGET_FILE:diffuse_c> ${DIFFUSE_TINY_MODEL})
    list(APPEND DIFFUSE_LIBRARY_TESTS c_api_python)
  endif()
  # cmake --install into a temporary prefix, every installed header compiled on its own, then
  # examples/cpp and examples/c built against the prefix with find_package and run.
  add_test(NAME install_and_examples COMMAND ${PROJECT_SOURCE_DIR}/tests/install_test.sh
    ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR} "${Torch_DIR}" ${DIFFUSE_TINY_MODEL})
  list(APPEND DIFFUSE_LIBRARY_TESTS install_and_examples)
  set_tests_properties(${DIFFUSE_LIBRARY_TESTS} PROPERTIES TIMEOUT 900)
endif()
