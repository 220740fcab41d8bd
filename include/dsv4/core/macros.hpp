// Compiler and CUDA conditionals of dsv4, and the only place that defines macros.
//
// Host-compiled code sees plain `inline` functions; under nvcc the same small helpers become
// `__host__ __device__`, so the CPU specification and the CUDA kernels share one definition of
// each number-format conversion. DSV4_ASSERT is active in debug builds (no NDEBUG) or when
// DSV4_ENABLE_ASSERTS is defined, and compiles to nothing otherwise.
#pragma once

#include <cstdio>
#include <cstdlib>

// The library version; CMakeLists.txt reads it from here.
#define DSV4_VERSION_MAJOR 0
#define DSV4_VERSION_MINOR 1
#define DSV4_VERSION_PATCH 0
#define DSV4_VERSION_STRING "0.1.0"

#if defined(__CUDACC__)
#define DSV4_HOST_DEVICE __host__ __device__
#define DSV4_DEVICE __device__
#else
#define DSV4_HOST_DEVICE
#define DSV4_DEVICE
#endif

#if defined(_MSC_VER)
#define DSV4_FORCEINLINE __forceinline
#else
#define DSV4_FORCEINLINE inline __attribute__((always_inline))
#endif

#define DSV4_STRINGIFY_IMPL(x) #x
#define DSV4_STRINGIFY(x) DSV4_STRINGIFY_IMPL(x)

#if defined(__CUDA_ARCH__)
#define DSV4_UNROLL _Pragma("unroll")
#else
#define DSV4_UNROLL
#endif

#if !defined(NDEBUG) && !defined(DSV4_ENABLE_ASSERTS)
#define DSV4_ENABLE_ASSERTS 1
#endif

namespace dsv4::detail {
// Out of line so that the assertion does not bloat every inlined accessor.
[[noreturn]] inline DSV4_HOST_DEVICE void assert_fail(const char* expr, const char* msg, const char* file,
                                                      int line) {
#if defined(__CUDA_ARCH__)
  printf("dsv4 assertion failed: %s (%s) at %s:%d\n", msg, expr, file, line);
  __trap();
#else
  std::fprintf(stderr, "dsv4 assertion failed: %s (%s) at %s:%d\n", msg, expr, file, line);
  std::abort();
#endif
}
}  // namespace dsv4::detail

#if defined(DSV4_ENABLE_ASSERTS)
#define DSV4_ASSERT(cond, msg) \
  ((cond) ? static_cast<void>(0) : ::dsv4::detail::assert_fail(#cond, msg, __FILE__, __LINE__))
#else
#define DSV4_ASSERT(cond, msg) static_cast<void>(0)
#endif

// Returns a failed dsv4::status (or anything convertible to one) to the caller.
#define DSV4_TRY(expr)                                   \
  do {                                                   \
    auto dsv4_try_status_ = (expr);                      \
    if (!dsv4_try_status_.ok()) return dsv4_try_status_; \
  } while (0)

// Returns a dsv4::status naming the failed CUDA runtime call (CUDA translation units only; see
// dsv4/core/cuda_check.cuh).
#define DSV4_CUDA_CHECK(call)                                              \
  do {                                                                     \
    ::dsv4::status dsv4_cuda_status_ = ::dsv4::cuda_status((call), #call); \
    if (!dsv4_cuda_status_.ok()) return dsv4_cuda_status_;                 \
  } while (0)
