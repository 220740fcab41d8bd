// dsv4/core/numerics.hpp: the span form of to_activation rounds every element exactly as the
// scalar round_to_bf16 does (the span form is written for vector code, the scalar one is the
// definition, itself tested exhaustively in dtype_test.cpp).
#include <catch2/catch.hpp>

#include <bit>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "dsv4/core/numerics.hpp"

namespace {
using dsv4::numerics;

// The floats whose bits are h << 16 | low for every high half h and the low halves that decide a
// rounding: 0, just below, at and just above the midpoint, and all ones (NaN payloads, the
// infinities, subnormals and the largest finite floats among them), then random bit patterns.
std::vector<float> rounding_cases() {
  std::vector<float> x;
  for (std::uint32_t h = 0; h < 0x10000u; ++h)
    for (std::uint32_t low : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu})
      x.push_back(std::bit_cast<float>(h << 16 | low));
  std::mt19937 rng(3);
  for (int i = 0; i < 100000; ++i) x.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(rng())));
  return x;
}
}  // namespace

TEST_CASE("to_activation over a span rounds every element as round_to_bf16 does", "[numerics]") {
  const std::vector<float> cases = rounding_cases();
  // Odd offsets and lengths, so that vector bodies and scalar tails both run.
  for (std::size_t offset : {0, 1, 7}) {
    std::vector<float> x(cases.begin() + static_cast<std::ptrdiff_t>(offset), cases.end());
    const std::vector<float> before = x;
    dsv4::to_activation(numerics::released, std::span<float>(x));
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
      wrong +=
          std::bit_cast<std::uint32_t>(x[i]) != std::bit_cast<std::uint32_t>(dsv4::round_to_bf16(before[i]));
    INFO("offset " << offset);
    CHECK(wrong == 0);
  }
  std::vector<float> x(cases.begin(), cases.begin() + 1001);
  const std::vector<float> before = x;
  dsv4::to_activation(numerics::exact, std::span<float>(x));
  CHECK(std::equal(x.begin(), x.end(), before.begin(), [](float a, float b) {
    return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
  }));
}
