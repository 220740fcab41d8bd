// The MoE module's bad-input catalogue: every public entry point of dsv4::moe given views whose
// extents are negative, zero where a dimension must be positive, or inconsistent with each other,
// and hyper-parameters outside their domain. Each call must return a status that names the
// argument at fault, leave its outputs as they were, and neither crash, throw nor read outside
// its views (the AddressSanitizer build checks the last).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "dsv4/moe/dispatch.hpp"
#include "dsv4/moe/experts.hpp"
#include "dsv4/moe/load_balance.hpp"
#include "dsv4/moe/moe_ffn.hpp"
#include "dsv4/moe/router.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::errc;
using dsv4::f32_matrix;
using dsv4::index_t;
using dsv4::status;
using dsv4::moe::swiglu_weights;

constexpr index_t d = 32, inter = 16, n_experts = 4, k = 2, n = 3, vocab = 8;
constexpr float sentinel = -7.0f;
const float qnan = std::numeric_limits<float>::quiet_NaN(), pos_inf = std::numeric_limits<float>::infinity();

// The status is an error that names `name`.
void check_names(const status& st, const std::string& name) {
  INFO(st.to_string());
  CHECK_FALSE(st.ok());
  CHECK(st.message().find(name) != std::string::npos);
}

template <class T>
bool untouched(const std::vector<T>& v, T value) {
  return std::all_of(v.begin(), v.end(), [&](T e) { return e == value; });
}

// Random f32 weights: a gate (E, d), routed experts (inter, d) / (d, inter), a shared expert, a
// bias and a tid2eid table (vocab, k) with distinct experts per row.
struct weights {
  std::vector<float> gate = dsv4::test::random_normal(n_experts * d, 1, 0.3f);
  std::vector<float> bias = dsv4::test::random_normal(n_experts, 2, 0.1f);
  std::vector<float> mats = dsv4::test::random_normal((n_experts + 1) * 3 * inter * d, 3, 0.2f);
  std::vector<std::int32_t> table;
  std::vector<swiglu_weights<f32_matrix>> experts;
  weights() {
    for (index_t t = 0; t < vocab; ++t)
      for (index_t j = 0; j < k; ++j) table.push_back(static_cast<std::int32_t>((t + 3 * j) % n_experts));
    for (index_t e = 0; e <= n_experts; ++e) experts.push_back(expert(e, inter, d));
  }
  swiglu_weights<f32_matrix> expert(index_t e, index_t rows, index_t cols) const {
    const float* base = mats.data() + e * 3 * inter * d;
    return {
        {{base, {rows, cols}}}, {{base + inter * d, {rows, cols}}}, {{base + 2 * inter * d, {cols, rows}}}};
  }
  f32_matrix gate_view(index_t rows = n_experts, index_t cols = d) const {
    return {{gate.data(), {rows, cols}}};
  }
  std::span<const swiglu_weights<f32_matrix>> routed() const {
    return {experts.data(), std::size_t(n_experts)};
  }
};

// Route outputs filled with the sentinel, sized generously so that any view below stays inside.
struct route_out {
  std::vector<std::int32_t> ids = std::vector<std::int32_t>(64, -7);
  std::vector<float> w = std::vector<float>(64, sentinel), scores = std::vector<float>(64, sentinel);
  dsv4::moe::routes view(index_t rows = n, index_t slots = k, index_t ids_rows = n, index_t w_rows = n,
                         index_t score_cols = n_experts) {
    return {
        {ids.data(), {ids_rows, slots}}, {w.data(), {w_rows, slots}}, {scores.data(), {rows, score_cols}}};
  }
  bool untouched() const {
    return ::untouched(ids, std::int32_t{-7}) && ::untouched(w, sentinel) && ::untouched(scores, sentinel);
  }
};

}  // namespace

TEST_CASE("moe validation: the score router refuses negative, zero and inconsistent extents") {
  const weights wt;
  const auto x = dsv4::test::random_normal(n * d + d, 10);
  const dsv4::moe::score_router<f32_matrix> r{wt.gate_view(), {wt.bias.data(), {n_experts}}, k, 1.5f};
  route_out out;
  check_names(r.route({{x.data(), {-n, d}}, {}}, out.view()), "x");
  check_names(r.route({{x.data(), {n, -d}}, {}}, out.view()), "x");
  check_names(r.route({{x.data(), {n, d + 1}}, {}}, out.view()), "x");
  check_names(r.route({{x.data(), {n, d}}, {}}, out.view(n, k, n, n, -n_experts)), "routes.scores");
  check_names(r.route({{x.data(), {n, d}}, {}}, out.view(n, -k)), "routes.experts");
  check_names(r.route({{x.data(), {n, d}}, {}}, out.view(n, k, -n)), "routes.experts");
  check_names(r.route({{x.data(), {n, d}}, {}}, out.view(n, k, n, -n)), "routes.weights");
  check_names(r.route({{x.data(), {n, d}}, {}}, out.view(n + 1)), "routes");
  for (const index_t rows : {-n_experts, index_t{0}}) {
    const dsv4::moe::score_router<f32_matrix> bad_gate{wt.gate_view(rows), {}, 1, 1.5f};
    check_names(bad_gate.route({{x.data(), {n, d}}, {}}, out.view()), "gate");
  }
  const dsv4::moe::score_router<f32_matrix> bad_bias{wt.gate_view(), {wt.bias.data(), {-n_experts}}, k, 1.5f};
  check_names(bad_bias.route({{x.data(), {n, d}}, {}}, out.view()), "gate.bias");
  CHECK(out.untouched());
  // No tokens is a valid batch that writes nothing.
  CHECK(r.route({{x.data(), {0, d}}, {}}, out.view(0, k, 0, 0)).ok());
  CHECK(out.untouched());
}

TEST_CASE("moe validation: the hash router refuses bad table extents and token counts") {
  const weights wt;
  const auto x = dsv4::test::random_normal(n * d, 11);
  const std::vector<std::int32_t> ids = {1, 5, 2};
  route_out out;
  for (const dsv4::extents_t<2> e :
       {dsv4::extents_t<2>{-vocab, k}, dsv4::extents_t<2>{vocab, -k}, dsv4::extents_t<2>{vocab, 0},
        dsv4::extents_t<2>{vocab, n_experts + 1}}) {
    const dsv4::moe::hash_router<f32_matrix, std::int32_t> h{wt.gate_view(), {wt.table.data(), e}, 1.5f};
    INFO("tid2eid " << e[0] << " x " << e[1]);
    check_names(h.route({{x.data(), {n, d}}, ids}, out.view(n, std::max<index_t>(e[1], 0))), "tid2eid");
  }
  const dsv4::moe::hash_router<f32_matrix, std::int32_t> h{
      wt.gate_view(), {wt.table.data(), {vocab, k}}, 1.5f};
  check_names(h.route({{x.data(), {-n, d}}, ids}, out.view()), "x");
  check_names(h.route({{x.data(), {n, d}}, std::span<const std::int32_t>(ids.data(), 2)}, out.view()),
              "token_ids");
  check_names(h.route({{x.data(), {n, d}}, ids}, out.view(n, k, n, n, -1)), "routes.scores");
  CHECK(out.untouched());
}

TEST_CASE("moe validation: swiglu_forward refuses bad views, weights, scratch and limits") {
  const weights wt;
  const auto x = dsv4::test::random_normal(n * d, 12);
  std::vector<float> y(static_cast<std::size_t>(n * d + d), sentinel), scratch(1024);
  const auto e = wt.experts[0];
  const auto run = [&](const swiglu_weights<f32_matrix>& ex, dsv4::extents_t<2> xe, dsv4::extents_t<2> ye,
                       std::span<const float> row_weight = {}, float limit = 10.0f,
                       std::size_t scratch_floats = 1024) {
    return dsv4::moe::swiglu_forward(ex, {x.data(), xe}, row_weight, limit, {y.data(), ye},
                                     std::span<float>(scratch.data(), scratch_floats));
  };
  check_names(run(e, {-n, d}, {n, d}), "x");
  check_names(run(e, {n, -d}, {n, d}), "x");
  check_names(run(e, {n, d}, {-n, d}), "y");
  check_names(run(e, {n, d}, {n, -d}), "y");
  check_names(run(e, {n, d}, {n + 1, d}), "y");
  check_names(run(wt.expert(0, -inter, d), {n, d}, {n, d}), "expert.w1");
  check_names(run(wt.expert(0, 0, d), {n, d}, {n, d}), "expert.w1");
  check_names(run(wt.expert(0, inter, -d), {-n, -d}, {n, d}), "expert.w1");
  auto mismatched = e;
  mismatched.w2 = {{wt.mats.data(), {d, inter + 1}}};
  check_names(run(mismatched, {n, d}, {n, d}), "expert");
  const std::vector<float> two = {1.0f, 2.0f};
  check_names(run(e, {n, d}, {n, d}, two), "row_weight");
  check_names(run(e, {n, d}, {n, d}, {}, 10.0f, 2 * n * inter - 1), "scratch");
  for (const float limit : {-1.0f, qnan, pos_inf}) {
    INFO("limit " << limit);
    check_names(run(e, {n, d}, {n, d}, {}, limit), "swiglu_limit");
  }
  CHECK(e.check("experts.5").ok());
  check_names(wt.expert(0, -inter, d).check("experts.5"), "experts.5.w1");
  CHECK(untouched(y, sentinel));
}

TEST_CASE("moe validation: the dense FFN refuses bad views and limits; its size query survives them") {
  const weights wt;
  const auto x = dsv4::test::random_normal(n * d, 13);
  std::vector<float> y(static_cast<std::size_t>(n * d), sentinel);
  const dsv4::moe::dense_swiglu_ffn<f32_matrix> ffn{wt.experts[0], 10.0f};
  dsv4::test::aligned_workspace ws(ffn.workspace_bytes(n));
  check_names(ffn.forward({{x.data(), {-n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "x");
  check_names(ffn.forward({{x.data(), {n, d}}, {}}, {y.data(), {-n, d}}, ws.bytes), "y");
  check_names(ffn.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, -d}}, ws.bytes), "y");
  for (const float limit : {-1.0f, qnan}) {
    const dsv4::moe::dense_swiglu_ffn<f32_matrix> bad{wt.experts[0], limit};
    check_names(bad.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "swiglu_limit");
  }
  const dsv4::moe::dense_swiglu_ffn<f32_matrix> bad_weights{wt.expert(0, -inter, d), 10.0f};
  check_names(bad_weights.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "ffn.w1");
  CHECK(untouched(y, sentinel));
  CHECK(ffn.workspace_bytes(-5) == ffn.workspace_bytes(0));
  CHECK(bad_weights.workspace_bytes(n) == ffn.workspace_bytes(0));
}

TEST_CASE("moe validation: the MoE layer refuses bad views, experts and limits before writing y") {
  const weights wt;
  const auto x = dsv4::test::random_normal(n * d, 14);
  std::vector<float> y(static_cast<std::size_t>(n * d), sentinel);
  using layer_t = dsv4::moe::moe_ffn<dsv4::moe::score_router<f32_matrix>, f32_matrix>;
  const dsv4::moe::score_router<f32_matrix> r{wt.gate_view(), {wt.bias.data(), {n_experts}}, k, 1.5f};
  const layer_t layer{r, wt.routed(), wt.experts[n_experts], 10.0f};
  dsv4::test::aligned_workspace ws(layer.workspace_bytes(n));
  check_names(layer.forward({{x.data(), {-n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "x");
  check_names(layer.forward({{x.data(), {n, -d}}, {}}, {y.data(), {n, d}}, ws.bytes), "x");
  check_names(layer.forward({{x.data(), {n, d}}, {}}, {y.data(), {-n, d}}, ws.bytes), "y");
  check_names(layer.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d - 1}}, ws.bytes), "y");
  for (const float limit : {-1.0f, qnan, pos_inf}) {
    const layer_t bad{r, wt.routed(), wt.experts[n_experts], limit};
    check_names(bad.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "swiglu_limit");
  }
  auto broken = wt.experts;
  broken[2] = wt.expert(2, -inter, d);
  const layer_t bad_expert{r, {broken.data(), std::size_t(n_experts)}, wt.experts[n_experts], 10.0f};
  check_names(bad_expert.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "experts.2");
  const layer_t too_few{r, {wt.experts.data(), std::size_t(n_experts - 1)}, std::nullopt, 10.0f};
  check_names(too_few.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "experts");
  const layer_t bad_router{{wt.gate_view(), {}, 0, 1.5f}, wt.routed(), std::nullopt, 10.0f};
  check_names(bad_router.forward({{x.data(), {n, d}}, {}}, {y.data(), {n, d}}, ws.bytes), "k = 0");
  CHECK(untouched(y, sentinel));
  CHECK(layer.workspace_bytes(-3) == layer.workspace_bytes(0));
  CHECK(bad_router.workspace_bytes(n) < ws.bytes.size());
}

TEST_CASE("moe validation: dispatch refuses negative extents and expert counts before writing") {
  const std::vector<std::int32_t> ids = {0, 1, 2, 3, 1, 0};  // (3, 2)
  std::vector<std::int32_t> counts(8, -7), offsets(9, -7), order(8, -7), inverse(8, -7);
  const auto plan = [&](index_t ne, index_t pairs, index_t counts_extent) {
    return dsv4::moe::dispatch_plan{{counts.data(), {counts_extent}},
                                    {offsets.data(), {ne + 1}},
                                    {order.data(), {pairs}},
                                    {inverse.data(), {pairs}}};
  };
  check_names(dsv4::moe::plan_dispatch({ids.data(), {-n, k}}, n_experts, plan(n_experts, 6, n_experts)),
              "experts");
  check_names(dsv4::moe::plan_dispatch({ids.data(), {n, -k}}, n_experts, plan(n_experts, 6, n_experts)),
              "experts");
  for (const index_t ne : {index_t{0}, index_t{-1}, index_t{-5}}) {
    INFO("n_experts " << ne);
    check_names(dsv4::moe::plan_dispatch({ids.data(), {n, k}}, ne, plan(ne, 6, ne)), "n_experts");
  }
  check_names(dsv4::moe::plan_dispatch({ids.data(), {n, k}}, n_experts, plan(n_experts, 6, -n_experts)),
              "plan.counts");
  check_names(dsv4::moe::plan_dispatch({ids.data(), {n, k}}, n_experts, plan(n_experts, -6, n_experts)),
              "plan.order");
  CHECK(untouched(counts, std::int32_t{-7}));
  CHECK(untouched(offsets, std::int32_t{-7}));
  CHECK(untouched(order, std::int32_t{-7}));

  const auto x = dsv4::test::random_normal(n * d, 15);
  const auto ys = dsv4::test::random_normal(n * k * d, 16);
  const std::vector<std::int32_t> rows = {0, 1, 2, 3, 4, 5};
  std::vector<float> xs(static_cast<std::size_t>(n * k * d), sentinel),
      y(static_cast<std::size_t>(n * d), sentinel);
  check_names(
      dsv4::moe::gather_tokens({x.data(), {-n, d}}, {rows.data(), {n * k}}, k, {xs.data(), {n * k, d}}), "x");
  check_names(
      dsv4::moe::gather_tokens({x.data(), {n, d}}, {rows.data(), {-n * k}}, k, {xs.data(), {n * k, d}}),
      "order");
  check_names(
      dsv4::moe::gather_tokens({x.data(), {n, d}}, {rows.data(), {n * k}}, k, {xs.data(), {n * k, -d}}),
      "xs");
  check_names(dsv4::moe::combine({ys.data(), {n * k, d}}, {rows.data(), {n * k}}, k, {}, {y.data(), {-n, d}}),
              "y");
  check_names(dsv4::moe::combine({ys.data(), {-n * k, d}}, {rows.data(), {n * k}}, k, {}, {y.data(), {n, d}}),
              "ys");
  check_names(dsv4::moe::combine({ys.data(), {n * k, d}}, {rows.data(), {-n * k}}, k, {}, {y.data(), {n, d}}),
              "inverse");
  check_names(dsv4::moe::combine({ys.data(), {n * k, d}}, {rows.data(), {n * k}}, k, {x.data(), {-n, d}},
                                 {y.data(), {n, d}}),
              "shared");
  check_names(dsv4::moe::combine({ys.data(), {n * k, d}}, {rows.data(), {n * k}}, k, {x.data(), {n - 1, d}},
                                 {y.data(), {n, d}}),
              "shared");
  CHECK(untouched(xs, sentinel));
  CHECK(untouched(y, sentinel));
}

TEST_CASE("moe validation: the load-balancing functions refuse bad extents and scalars, and never throw") {
  const std::vector<std::int32_t> ids = {0, 1, 2, 3, 1, 0};  // (3, 2)
  std::vector<std::int64_t> counts(8, -7);
  check_names(dsv4::moe::count_expert_load({ids.data(), {-n, k}}, {counts.data(), {n_experts}}), "experts");
  check_names(dsv4::moe::count_expert_load({ids.data(), {n, k}}, {counts.data(), {-n_experts}}), "counts");
  check_names(dsv4::moe::count_expert_load({ids.data(), {n, k}}, {counts.data(), {0}}), "counts");
  CHECK(untouched(counts, std::int64_t{-7}));

  std::vector<float> bias(8, sentinel);
  const std::vector<std::int64_t> load = {3, 1, 1, 1, 0};
  check_names(dsv4::moe::update_bias({bias.data(), {-n_experts}}, {load.data(), {n_experts}}), "bias");
  check_names(dsv4::moe::update_bias({bias.data(), {n_experts}}, {load.data(), {n_experts + 1}}), "counts");
  check_names(dsv4::moe::update_bias({bias.data(), {n_experts}}, {load.data(), {-n_experts}}), "counts");
  check_names(dsv4::moe::update_bias({bias.data(), {n_experts}}, {load.data(), {n_experts}}, qnan), "speed");
  CHECK(untouched(bias, sentinel));

  const auto scores = dsv4::test::random_normal(n * n_experts, 17);
  const auto loss = [&](dsv4::extents_t<2> se, dsv4::extents_t<2> ee, float alpha = 1e-4f) {
    return dsv4::moe::sequence_balance_loss({scores.data(), se}, {ids.data(), ee}, alpha).error();
  };
  check_names(loss({n, -n_experts}, {n, k}), "scores");
  check_names(loss({-n, n_experts}, {n, k}), "scores");
  check_names(loss({n, n_experts}, {n, -k}), "experts");
  check_names(loss({n, n_experts}, {n - 1, k}), "experts");
  check_names(loss({n, n_experts}, {n, k}, qnan), "alpha");
}
