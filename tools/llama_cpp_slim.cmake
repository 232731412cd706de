# Included by llama-cpp-python's CMakeLists right after its project() call (CMAKE_PROJECT_llama_cpp_INCLUDE, set
# by the Makefile). llama-cpp-python forces LLAMA_BUILD_COMMON=ON in the cache, but its Python package loads only
# libllama/libggml*: llama.cpp's `common` library and cpp-httplib were 40% of the compile (365 of 833 CPU-seconds,
# measured on 2 cores). A normal variable shadows the forced cache entry (policy CMP0126), so they are not built.
set(LLAMA_BUILD_COMMON OFF)
