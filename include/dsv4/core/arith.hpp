// Integer helpers for sizes and addresses: rounding, and arithmetic that reports overflow instead
// of wrapping. Every size a caller can influence (token counts, capacities, shapes) goes through
// the checked forms before it sizes memory or bounds a loop.
#pragma once

#include <cstdint>

namespace dsv4 {

// ceil(a / b) for a >= 0, b > 0.
constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
// The smallest multiple of q not below a, for a >= 0, q > 0.
constexpr std::int64_t round_up(std::int64_t a, std::int64_t q) { return ceil_div(a, q) * q; }

// out = a + b, or false when the sum does not fit.
constexpr bool checked_add(std::int64_t a, std::int64_t b, std::int64_t& out) {
  return !__builtin_add_overflow(a, b, &out);
}
// out = a * b, or false when the product does not fit.
constexpr bool checked_mul(std::int64_t a, std::int64_t b, std::int64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

}  // namespace dsv4
