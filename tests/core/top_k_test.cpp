// The one top-k rule (core/top_k.hpp): larger scores first, NaN below every number, -0 equal to
// +0, ties to the lower index. Both selections against a full sort by that rule, written here
// independently of the library's integer keys, on short lists and on long ones (which the sampled
// bound cuts down), with NaNs of both signs, infinities, signed zeros and many ties.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "dsv4/core/top_k.hpp"
#include "random.hpp"

namespace {

using dsv4::index_t;

constexpr float inf = std::numeric_limits<float>::infinity();
const float pos_nan = std::numeric_limits<float>::quiet_NaN();
const float neg_nan = -std::numeric_limits<float>::quiet_NaN();

// The rule on floats: a before b.
bool ranks_before(float a, std::int32_t ia, float b, std::int32_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na != nb) return nb;          // a number before a NaN
  if (!na && a != b) return a > b;  // -0 == +0 here
  return ia < ib;                   // equal scores or both NaN
}

// All indices of s in rank order.
std::vector<std::int32_t> rank_order(const std::vector<float>& s) {
  std::vector<std::int32_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return ranks_before(s[std::size_t(a)], a, s[std::size_t(b)], b);
  });
  return order;
}

std::vector<std::int32_t> expected_set(const std::vector<float>& s, index_t k) {
  auto order = rank_order(s);
  order.resize(std::size_t(std::min<index_t>(k, index_t(s.size()))));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<std::int32_t> expected_ranked(const std::vector<float>& s, index_t k) {
  auto order = rank_order(s);
  order.resize(std::size_t(std::min<index_t>(k, index_t(s.size()))));
  return order;
}

std::vector<std::int32_t> selected(const std::vector<float>& s, index_t k) {
  std::vector<std::int32_t> got(s.size(), -1);
  const index_t count = dsv4::select_top_k(s, k, got);
  got.resize(std::size_t(count));
  return got;
}

std::vector<std::int32_t> ranked(const std::vector<float>& s, index_t k) {
  std::vector<std::int32_t> got(std::size_t(k), -1);
  const index_t count = dsv4::select_top_k_ranked(s, {}, got);
  got.resize(std::size_t(count));
  return got;
}

// n scores: normal values on a coarse grid (ties), with NaNs of both signs, infinities and signed
// zeros at random places (each kind about `special` of the time).
std::vector<float> awkward_scores(std::size_t n, unsigned seed, double special) {
  auto s = dsv4::test::random_normal(n, seed, 4.0f);
  std::mt19937 rng(seed + 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const float kinds[] = {pos_nan, neg_nan, inf, -inf, 0.0f, -0.0f};
  for (float& v : s) {
    v = std::round(v * 8.0f) / 8.0f;
    const double r = u(rng);
    if (r < 6 * special) v = kinds[int(r / special)];
  }
  return s;
}

}  // namespace

TEST_CASE("top-k rule: NaN ranks below every number, -inf included, whatever its sign", "[core][top_k]") {
  const std::vector<float> s = {pos_nan, -inf, 1.0f, neg_nan, 0.5f};
  CHECK(selected(s, 2) == std::vector<std::int32_t>{2, 4});
  CHECK(selected(s, 3) == std::vector<std::int32_t>{1, 2, 4});
  CHECK(selected(s, 4) == std::vector<std::int32_t>{0, 1, 2, 4});  // NaNs tie: the lower index
  CHECK(selected(s, 9) == std::vector<std::int32_t>{0, 1, 2, 3, 4});
  CHECK(ranked(s, 3) == std::vector<std::int32_t>{2, 4, 1});
  CHECK(ranked(s, 5) == std::vector<std::int32_t>{2, 4, 1, 0, 3});
  // +inf is a number and ranks first; a NaN never displaces it.
  const std::vector<float> t = {neg_nan, inf, pos_nan};
  CHECK(selected(t, 1) == std::vector<std::int32_t>{1});
  CHECK(ranked(t, 1) == std::vector<std::int32_t>{1});
  CHECK(dsv4::top_k_key(pos_nan) < dsv4::top_k_key(-inf));
  CHECK(dsv4::top_k_key(neg_nan) == dsv4::top_k_key(pos_nan));
  CHECK(dsv4::top_k_key(-0.0f) == dsv4::top_k_key(0.0f));
}

TEST_CASE("top-k rule: ties go to the lower index, -0 equals +0, k past n selects all", "[core][top_k]") {
  const std::vector<float> s = {0.5f, 2.0f, 0.0f, 2.0f, -1.0f, -0.0f, 0.0f, 3.0f};
  CHECK(selected(s, 3) == std::vector<std::int32_t>{1, 3, 7});
  CHECK(selected(s, 5) == std::vector<std::int32_t>{0, 1, 2, 3, 7});
  CHECK(ranked(s, 6) == std::vector<std::int32_t>{7, 1, 3, 0, 2, 5});
  CHECK(selected(s, 20).size() == s.size());
  CHECK(ranked(s, 20) == expected_ranked(s, 20));
  CHECK(selected(s, 0).empty());
  CHECK(ranked(s, 0).empty());
  CHECK(selected({}, 3).empty());
}

TEST_CASE("top-k rule: short lists with NaNs, infinities and ties against a full sort", "[core][top_k]") {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    const auto s = awkward_scores(5 + seed * 7, seed, 0.04);
    for (const index_t k : {1, 2, 6, 17, 400}) {
      INFO("seed " << seed << ", k " << k);
      CHECK(selected(s, k) == expected_set(s, k));
      CHECK(ranked(s, k) == expected_ranked(s, k));
    }
  }
}

TEST_CASE("top-k rule: long lists with NaNs, infinities and ties against a full sort", "[core][top_k]") {
  for (const std::size_t n : {16384u, 16411u, 100003u, 262147u}) {
    const auto s = awkward_scores(n, unsigned(n), 0.01);
    for (const index_t k : {1, 64, 512, 2048}) {
      INFO("n " << n << ", k " << k);
      CHECK(selected(s, k) == expected_set(s, k));
    }
    CHECK(ranked(s, 6) == expected_ranked(s, 6));
  }
  // Every sampled position of the bound (j * n / 4096) holds a NaN: the sample's bound is the NaN
  // key, and the numbers elsewhere must still win.
  const std::size_t n = 65536;
  auto s = dsv4::test::random_normal(n, 77);
  for (std::size_t j = 0; j < 4096; ++j) s[j * n / 4096] = (j % 2) ? pos_nan : neg_nan;
  CHECK(selected(s, 512) == expected_set(s, 512));
  // More NaNs than numbers: all numbers, then the NaNs of the lowest indices.
  std::vector<float> mostly_nan(20000, pos_nan);
  for (std::size_t i = 0; i < mostly_nan.size(); i += 97) mostly_nan[i] = float(i % 13) - 6.0f;
  CHECK(selected(mostly_nan, 1000) == expected_set(mostly_nan, 1000));
  CHECK(ranked(mostly_nan, 300) == expected_ranked(mostly_nan, 300));
}

TEST_CASE("top-k rule: the ranked selection adds the bias before ranking", "[core][top_k]") {
  const auto s = dsv4::test::random_normal(256, 5);
  auto bias = dsv4::test::random_normal(256, 6, 0.5f);
  bias[3] = pos_nan;  // its sum is NaN: never chosen over a number
  bias[9] = inf;      // its sum is +inf: always first
  std::vector<float> sum(s.size());
  for (std::size_t e = 0; e < s.size(); ++e) sum[e] = s[e] + bias[e];
  std::vector<std::int32_t> got(6);
  REQUIRE(dsv4::select_top_k_ranked(s, bias, got) == 6);
  CHECK(got == expected_ranked(sum, 6));
  CHECK(got[0] == 9);
}
