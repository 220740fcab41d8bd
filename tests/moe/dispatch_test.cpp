// Dispatch: the plan is a permutation grouped by expert whose inverse undoes it, gathering and
// scattering back is the identity, and combine adds in a fixed order whatever the thread count.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "dsv4/moe/dispatch.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;

struct plan_storage {
  std::vector<std::int32_t> counts, offsets, order, inverse;
  plan_storage(index_t n_experts, index_t pairs)
      : counts(static_cast<std::size_t>(n_experts)),
        offsets(static_cast<std::size_t>(n_experts + 1)),
        order(static_cast<std::size_t>(pairs)),
        inverse(static_cast<std::size_t>(pairs)) {}
  dsv4::moe::dispatch_plan view() {
    const auto ne = static_cast<index_t>(counts.size()), pairs = static_cast<index_t>(order.size());
    return {{counts.data(), {ne}},
            {offsets.data(), {ne + 1}},
            {order.data(), {pairs}},
            {inverse.data(), {pairs}}};
  }
};

std::vector<std::int32_t> random_routes(index_t n, index_t k, index_t n_experts, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids;
  for (index_t t = 0; t < n; ++t) {
    std::vector<std::int32_t> all(static_cast<std::size_t>(n_experts));
    for (index_t e = 0; e < n_experts; ++e) all[e] = static_cast<std::int32_t>(e);
    std::shuffle(all.begin(), all.end(), rng);
    ids.insert(ids.end(), all.begin(), all.begin() + k);
  }
  return ids;
}

}  // namespace

TEST_CASE("dispatch: the plan groups pairs by expert and its inverse undoes it") {
  const index_t n = 37, k = 3, n_experts = 9, d = 5;
  const auto ids = random_routes(n, k, n_experts, 1);
  plan_storage p(n_experts, n * k);
  REQUIRE(dsv4::moe::plan_dispatch({ids.data(), {n, k}}, n_experts, p.view()).ok());
  CHECK(p.offsets.back() == n * k);
  for (index_t e = 0; e < n_experts; ++e) {
    CHECK(p.offsets[e + 1] - p.offsets[e] == p.counts[e]);
    CHECK(p.counts[e] == std::count(ids.begin(), ids.end(), e));
    for (index_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r) {
      CHECK(ids[p.order[r]] == e);
      if (r > p.offsets[e]) CHECK(p.order[r] > p.order[r - 1]);  // pair order within a block
    }
  }
  std::vector<int> seen(static_cast<std::size_t>(n * k));
  for (index_t r = 0; r < n * k; ++r) {
    ++seen[p.order[r]];
    CHECK(p.inverse[p.order[r]] == r);
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));

  // Gather, then read back through the inverse: every pair finds its token's row.
  const auto x = dsv4::test::random_normal(n * d, 2);
  std::vector<float> xs(static_cast<std::size_t>(n * k * d));
  REQUIRE(dsv4::moe::gather_tokens({x.data(), {n, d}}, p.view().order, k, {xs.data(), {n * k, d}}).ok());
  for (index_t pair = 0; pair < n * k; ++pair)
    for (index_t c = 0; c < d; ++c) REQUIRE(xs[p.inverse[pair] * d + c] == x[(pair / k) * d + c]);
}

TEST_CASE("dispatch: combine adds slots in order, then the shared output, for any thread count") {
  const index_t n = 23, k = 4, n_experts = 6, d = 7;
  const auto ids = random_routes(n, k, n_experts, 3);
  plan_storage p(n_experts, n * k);
  REQUIRE(dsv4::moe::plan_dispatch({ids.data(), {n, k}}, n_experts, p.view()).ok());
  const auto ys = dsv4::test::random_normal(n * k * d, 4);
  const auto shared = dsv4::test::random_normal(n * d, 5);
  std::vector<float> y1(static_cast<std::size_t>(n * d)), y2(y1.size());
  const int threads = dsv4::max_threads();
  dsv4::set_num_threads(1);
  REQUIRE(dsv4::moe::combine({ys.data(), {n * k, d}}, p.view().inverse, k, {shared.data(), {n, d}},
                             {y1.data(), {n, d}})
              .ok());
  dsv4::set_num_threads(2);
  REQUIRE(dsv4::moe::combine({ys.data(), {n * k, d}}, p.view().inverse, k, {shared.data(), {n, d}},
                             {y2.data(), {n, d}})
              .ok());
  dsv4::set_num_threads(threads);
  REQUIRE(y1 == y2);
  for (index_t t = 0; t < n; ++t)
    for (index_t c = 0; c < d; ++c) {
      float acc = ys[p.inverse[t * k] * d + c];
      for (index_t j = 1; j < k; ++j) acc += ys[p.inverse[t * k + j] * d + c];
      REQUIRE(y1[t * d + c] == acc + shared[t * d + c]);
    }
}

TEST_CASE("dispatch: expert ids outside the expert range are reported") {
  const std::vector<std::int32_t> ids = {0, 1, 2, 6};
  plan_storage p(6, 4);
  const auto st = dsv4::moe::plan_dispatch({ids.data(), {2, 2}}, 6, p.view());
  CHECK(st.code() == dsv4::errc::invalid_argument);
  CHECK(st.message().find("experts[1][1] = 6") != std::string::npos);
}

TEST_CASE(
    "dispatch: order and inverse entries outside 0 to n*k - 1 are reported before anything is written") {
  const index_t n = 11, k = 3, n_experts = 5, d = 4, pairs = n * k;
  const auto ids = random_routes(n, k, n_experts, 6);
  plan_storage p(n_experts, pairs);
  REQUIRE(dsv4::moe::plan_dispatch({ids.data(), {n, k}}, n_experts, p.view()).ok());
  const auto x = dsv4::test::random_normal(n * d, 7);
  const auto ys = dsv4::test::random_normal(pairs * d, 8);
  std::vector<float> xs(static_cast<std::size_t>(pairs * d), -7.0f),
      y(static_cast<std::size_t>(n * d), -7.0f);
  const auto untouched = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float f) { return f == -7.0f; });
  };
  for (const std::int32_t bad :
       {static_cast<std::int32_t>(pairs), static_cast<std::int32_t>(pairs + 1), -1}) {
    INFO("bad entry " << bad);
    auto order = p.order, inverse = p.inverse;
    order[9] = bad;
    inverse[pairs - 1] = bad;
    auto st =
        dsv4::moe::gather_tokens({x.data(), {n, d}}, {order.data(), {pairs}}, k, {xs.data(), {pairs, d}});
    CHECK(st.code() == dsv4::errc::invalid_argument);
    CHECK(st.message().find("order[9] = " + std::to_string(bad)) != std::string::npos);
    CHECK(untouched(xs));
    st = dsv4::moe::combine({ys.data(), {pairs, d}}, {inverse.data(), {pairs}}, k, {}, {y.data(), {n, d}});
    CHECK(st.code() == dsv4::errc::invalid_argument);
    CHECK(st.message().find("inverse[" + std::to_string(pairs - 1) + "] = " + std::to_string(bad)) !=
          std::string::npos);
    CHECK(untouched(y));
  }
  // k must be at least 1 for both.
  for (const index_t bad_k : {0, -2}) {
    INFO("k " << bad_k);
    CHECK(
        dsv4::moe::gather_tokens({x.data(), {n, d}}, p.view().order, bad_k, {xs.data(), {pairs, d}}).code() ==
        dsv4::errc::invalid_argument);
    CHECK(
        dsv4::moe::combine({ys.data(), {pairs, d}}, p.view().inverse, bad_k, {}, {y.data(), {n, d}}).code() ==
        dsv4::errc::invalid_argument);
  }
  CHECK(untouched(xs));
  CHECK(untouched(y));
}
