# Included by llama-cpp-python's CMakeLists right after its project() call (CMAKE_PROJECT_llama_cpp_INCLUDE, set
# by the Makefile). llama-cpp-python forces LLAMA_BUILD_COMMON=ON in the cache, but its Python package loads only
# libllama and libggml*: llama.cpp's `common` library and cpp-httplib were 54 of 178 compile steps and the slowest
# ones. A normal variable shadows the forced cache entry (policy CMP0126), so neither is built. With -DLLAVA_BUILD=OFF
# the build went from 532 to 212 CPU-seconds on 2 cores (docs/deploy.md, "Portable llama.cpp").
set(LLAMA_BUILD_COMMON OFF)
