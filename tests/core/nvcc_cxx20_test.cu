// nvcc must see C++20: concepts, class-type non-type template parameters and consteval work in
// a CUDA translation unit (CMake 3.25 does not pass -std=c++20 to nvcc 13 by itself).
#include <catch2/catch.hpp>

#include <concepts>

#include "dsv4/core/backend.hpp"

namespace {
struct shape {
  int rows, cols;
};
template <shape S>
struct fixed_matrix {
  static constexpr int size = S.rows * S.cols;
};
template <class T>
concept has_size = requires {
  T::size;
};
consteval int twice(int x) { return 2 * x; }

static_assert(__cplusplus >= 202002L, "nvcc is not compiling this file as C++20");
static_assert(has_size<fixed_matrix<shape{3, 4}>>);
static_assert(fixed_matrix<shape{3, 4}>::size == twice(6));
static_assert(dsv4::backend<dsv4::cuda<90>>);
}  // namespace

TEST_CASE("nvcc compiles C++20 concepts and class-type template arguments", "[core][cuda]") {
  CHECK(fixed_matrix<shape{2, 5}>::size == 10);
}
