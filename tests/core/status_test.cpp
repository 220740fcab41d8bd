// status and result<T>: messages, codes and propagation.
#include <catch2/catch.hpp>

#include <string>

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"

namespace {

dsv4::status fail_if_negative(int x) {
  if (x < 0) return {dsv4::errc::invalid_argument, "x: " + std::to_string(x) + " is negative"};
  return {};
}

dsv4::status chain(int x, int* reached) {
  DSV4_TRY(fail_if_negative(x));
  *reached = 1;
  return {};
}

dsv4::result<int> halve(int x) {
  if (x % 2) return dsv4::status{dsv4::errc::invalid_argument, "x is odd"};
  return x / 2;
}

}  // namespace

TEST_CASE("status carries a code and a message naming the problem", "[core][status]") {
  const dsv4::status ok;
  CHECK(ok.ok());
  CHECK(static_cast<bool>(ok));
  CHECK(ok.to_string() == "ok");

  const dsv4::status bad = fail_if_negative(-3);
  CHECK_FALSE(bad.ok());
  CHECK(bad.code() == dsv4::errc::invalid_argument);
  CHECK(bad.to_string() == "invalid argument: x: -3 is negative");
}

TEST_CASE("DSV4_TRY returns the first failure and stops", "[core][status]") {
  int reached = 0;
  CHECK(chain(-1, &reached).code() == dsv4::errc::invalid_argument);
  CHECK(reached == 0);
  CHECK(chain(4, &reached).ok());
  CHECK(reached == 1);
}

TEST_CASE("result<T> holds a value or a failed status", "[core][status]") {
  const auto a = halve(8);
  REQUIRE(a.ok());
  CHECK(*a == 4);
  CHECK(a.error().ok());

  const auto b = halve(3);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().message() == "x is odd");

  // An ok status is not a value: constructing a result from it is itself an error.
  const dsv4::result<int> c = dsv4::status{};
  CHECK_FALSE(c.ok());
  CHECK(c.error().code() == dsv4::errc::invalid_state);
}
