// parallel_for: every index exactly once, and bit-identical results for 1 and 2 threads.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "allocations.hpp"
#include "dsv4/core/parallel.hpp"

namespace {
// A row-wise reduction with float rounding: order-sensitive, so a change in how rows are split
// or summed would show in the bits.
std::vector<float> row_sums(const std::vector<float>& x, std::int64_t rows, std::int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows));
  dsv4::parallel_for(0, rows, [&](std::int64_t r) {
    float acc = 0.0f;
    for (std::int64_t c = 0; c < cols; ++c) acc += std::sin(x[static_cast<size_t>(r * cols + c)]) * 1.0001f;
    out[static_cast<size_t>(r)] = acc;
  });
  return out;
}
}  // namespace

TEST_CASE("parallel_for visits every index once", "[core][parallel]") {
  std::vector<int> hits(1000, 0);
  dsv4::parallel_for(0, 1000, [&](std::int64_t i) { hits[static_cast<size_t>(i)] += 1; });
  for (int h : hits) REQUIRE(h == 1);
  int calls = 0;
  dsv4::parallel_for(5, 5, [&](std::int64_t) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("parallel_for results do not depend on the thread count", "[core][parallel]") {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  const std::int64_t rows = 257, cols = 999;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (float& v : x) v = dist(rng);

  const int saved = dsv4::max_threads();
  dsv4::set_num_threads(1);
  const auto one = row_sums(x, rows, cols);
  dsv4::set_num_threads(2);
  const auto two = row_sums(x, rows, cols);
  dsv4::set_num_threads(saved);
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i)
    REQUIRE(std::bit_cast<std::uint32_t>(one[i]) == std::bit_cast<std::uint32_t>(two[i]));
}

TEST_CASE("parallel: the test allocation counter sees operator new on every thread") {
  // The counter the zero-allocation tests rely on (tests/allocations.hpp) must count, or their
  // zeros would mean nothing.
  const std::int64_t n = dsv4::test::allocations_during([] {
    dsv4::parallel_for(0, 4, [](std::int64_t i) {
      int* volatile p = new int(static_cast<int>(i));  // volatile: the pair may not be elided
      delete p;
    });
  });
  CHECK(n == 4);
}
