// The MoE layer: a batch equals its tokens one by one bit for bit (FP4 experts, FP8 shared expert,
// bf16 gate), the thread count changes nothing, the output matches a reference assembled from the
// routes, a bad token id leaves the output untouched, and a second forward allocates nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "allocations.hpp"
#include "dsv4/moe/moe_ffn.hpp"
#include "fixture.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;
using dsv4::test::format;
using dsv4::test::random_matrix;

constexpr index_t d = 64, inter = 32, n_experts = 8, k = 3;

template <format F>
struct expert_set {
  std::vector<random_matrix<F>> mats;
  std::vector<dsv4::moe::swiglu_weights<decltype(random_matrix<F>(1, 32, 0).view())>> views;
  expert_set(index_t count, index_t dim, index_t hidden, unsigned seed) {
    for (index_t e = 0; e < count; ++e) {
      mats.emplace_back(hidden, dim, seed + 3 * e, 0.4f);
      mats.emplace_back(hidden, dim, seed + 3 * e + 1, 0.4f);
      mats.emplace_back(dim, hidden, seed + 3 * e + 2, 0.3f);
    }
    for (index_t e = 0; e < count; ++e)
      views.push_back({mats[3 * e].view(), mats[3 * e + 1].view(), mats[3 * e + 2].view()});
  }
};

struct layer_fixture {
  random_matrix<format::bf16> gate{n_experts, d, 100, 0.3f};
  std::vector<float> bias = dsv4::test::random_normal(n_experts, 101, 0.1f);
  expert_set<format::fp4> routed{n_experts, d, inter, 200};
  expert_set<format::fp8> shared{1, d, 2 * inter, 300};
  dsv4::moe::moe_ffn<dsv4::moe::score_router<dsv4::bf16_matrix>, dsv4::fp4_matrix, dsv4::fp8_matrix> layer()
      const {
    return {{gate.view(), {bias.data(), {n_experts}}, k, 1.5f}, routed.views, shared.views[0], 10.0f};
  }
};

// Runs the layer on x (n, d).
template <class Layer>
dsv4::status run_layer(const Layer& l, const std::vector<float>& x, std::span<const std::int32_t> ids,
                       std::vector<float>& y) {
  const auto n = static_cast<index_t>(x.size()) / d;
  dsv4::test::aligned_workspace ws(l.workspace_bytes(n));
  return l.forward({{x.data(), {n, d}}, ids}, {y.data(), {n, d}}, ws.bytes);
}

}  // namespace

TEST_CASE("moe_ffn: a batch equals its tokens one by one, bit for bit, for any thread count") {
  const layer_fixture f;
  const auto layer = f.layer();
  const index_t n = 70;  // crosses a GEMM pass of 64 tokens
  const auto x = dsv4::test::random_normal(n * d, 7, 2.0f);
  std::vector<float> batch(static_cast<std::size_t>(n * d));
  REQUIRE(run_layer(layer, x, {}, batch).ok());
  for (index_t t = 0; t < n; ++t) {
    const std::vector<float> xt(x.begin() + t * d, x.begin() + (t + 1) * d);
    std::vector<float> yt(static_cast<std::size_t>(d));
    REQUIRE(run_layer(layer, xt, {}, yt).ok());
    for (index_t c = 0; c < d; ++c) REQUIRE(yt[c] == batch[t * d + c]);
  }
  const int threads = dsv4::max_threads();
  dsv4::set_num_threads(1);
  std::vector<float> one_thread(batch.size());
  REQUIRE(run_layer(layer, x, {}, one_thread).ok());
  dsv4::set_num_threads(threads);
  REQUIRE(one_thread == batch);
}

TEST_CASE("moe_ffn: the output is the weighted sum of the routed experts plus the shared expert") {
  const layer_fixture f;
  const auto layer = f.layer();
  const index_t n = 9;
  const auto x = dsv4::test::random_normal(n * d, 8, 2.0f);
  std::vector<float> y(static_cast<std::size_t>(n * d));
  REQUIRE(run_layer(layer, x, {}, y).ok());

  // Reference: route, then run each selected expert on its token alone and add up in double.
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n * k));
  std::vector<float> w(ids.size()), scores(static_cast<std::size_t>(n * n_experts));
  REQUIRE(layer.gate
              .route({{x.data(), {n, d}}, {}},
                     {{ids.data(), {n, k}}, {w.data(), {n, k}}, {scores.data(), {n, n_experts}}})
              .ok());
  std::vector<double> ref(static_cast<std::size_t>(n * d));
  std::vector<float> ye(static_cast<std::size_t>(d)),
      scratch(static_cast<std::size_t>(dsv4::moe::swiglu_scratch_floats(f.shared.views[0], 1)));
  for (index_t t = 0; t < n; ++t) {
    const dsv4::tensor_view<const float, 2> xt(x.data() + t * d, {1, d});
    for (index_t j = 0; j < k; ++j) {
      const float wt[1] = {w[t * k + j]};
      REQUIRE(dsv4::moe::swiglu_forward(f.routed.views[ids[t * k + j]], xt, wt, 10.0f, {ye.data(), {1, d}},
                                        scratch)
                  .ok());
      for (index_t c = 0; c < d; ++c) ref[t * d + c] += ye[c];
    }
    REQUIRE(dsv4::moe::swiglu_forward(f.shared.views[0], xt, {}, 10.0f, {ye.data(), {1, d}}, scratch).ok());
    for (index_t c = 0; c < d; ++c) ref[t * d + c] += ye[c];
  }
  CHECK(dsv4::test::rel_l2(y, std::vector<float>(ref.begin(), ref.end())) < 1e-6);
}

TEST_CASE("moe_ffn: hash routing rejects a token id outside the vocabulary and writes nothing") {
  const layer_fixture f;
  const index_t vocab = 16;
  std::vector<std::int32_t> table(static_cast<std::size_t>(vocab * k));
  for (std::size_t i = 0; i < table.size(); ++i)
    table[i] = static_cast<std::int32_t>((i * 3 + i / k) % n_experts);
  const dsv4::moe::moe_ffn<dsv4::moe::hash_router<dsv4::bf16_matrix, std::int32_t>, dsv4::fp4_matrix,
                           dsv4::fp8_matrix>
      layer{{f.gate.view(), {table.data(), {vocab, k}}, 1.5f}, f.routed.views, f.shared.views[0], 10.0f};
  const auto x = dsv4::test::random_normal(3 * d, 9);
  std::vector<float> y(static_cast<std::size_t>(3 * d), 42.0f);
  const std::vector<std::int32_t> bad = {1, 16, 2};
  const auto st = run_layer(layer, x, bad, y);
  CHECK(st.code() == dsv4::errc::invalid_argument);
  CHECK(st.message().find("token_ids[1] = 16") != std::string::npos);
  CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 42.0f; }));
  const std::vector<std::int32_t> good = {1, 15, 2};
  CHECK(run_layer(layer, x, good, y).ok());
  CHECK(std::none_of(y.begin(), y.end(), [](float v) { return v == 42.0f; }));
}

TEST_CASE("moe_ffn: a second forward allocates nothing, score- and hash-routed, with a shared expert") {
  // The released formats (FP4 routed, FP8 shared experts, whose GEMMs read x in a lane order of
  // their own) and BF16 ones, under a BF16 gate.
  const index_t n = 9, vocab = 16;
  const random_matrix<format::bf16> gate(n_experts, d, 110, 0.3f);
  const auto bias = dsv4::test::random_normal(n_experts, 111, 0.1f);
  std::vector<std::int32_t> table(static_cast<std::size_t>(vocab * k));
  for (std::size_t i = 0; i < table.size(); ++i)
    table[i] = static_cast<std::int32_t>((i + 2 * (i / k)) % n_experts);
  const auto x = dsv4::test::random_normal(n * d, 112, 2.0f);
  const std::vector<std::int32_t> ids = {3, 0, 15, 7, 7, 1, 12, 9, 4};
  const auto check = [&]<format R, format S>() {
    const expert_set<R> routed(n_experts, d, inter, 120);
    const expert_set<S> shared(1, d, 2 * inter, 130);
    using rw = decltype(routed.mats[0].view());
    using sw = decltype(shared.mats[0].view());
    using score_layer = dsv4::moe::moe_ffn<dsv4::moe::score_router<dsv4::bf16_matrix>, rw, sw>;
    using hash_layer = dsv4::moe::moe_ffn<dsv4::moe::hash_router<dsv4::bf16_matrix, std::int32_t>, rw, sw>;
    const score_layer by_score{
        {gate.view(), {bias.data(), {n_experts}}, k, 1.5f}, routed.views, shared.views[0], 10.0f};
    const hash_layer by_hash{
        {gate.view(), {table.data(), {vocab, k}}, 1.5f}, routed.views, shared.views[0], 10.0f};
    std::vector<float> y1(static_cast<std::size_t>(n * d)), y2(y1.size());
    dsv4::test::aligned_workspace ws(std::max(by_score.workspace_bytes(n), by_hash.workspace_bytes(n)));
    dsv4::status s1, s2;
    const auto forward = [&] {
      s1 = by_score.forward({{x.data(), {n, d}}, {}}, {y1.data(), {n, d}}, ws.bytes);
      s2 = by_hash.forward({{x.data(), {n, d}}, ids}, {y2.data(), {n, d}}, ws.bytes);
    };
    forward();  // the first call may start the thread pool
    REQUIRE(s1.ok());
    REQUIRE(s2.ok());
    const std::int64_t count = dsv4::test::allocations_during(forward);
    REQUIRE(s1.ok());
    REQUIRE(s2.ok());
    CHECK(count == 0);
    CHECK(std::none_of(y1.begin(), y1.end(), [](float v) { return v == 0.0f || !std::isfinite(v); }));
  };
  check.operator()<format::fp4, format::fp8>();
  check.operator()<format::bf16, format::bf16>();
}
