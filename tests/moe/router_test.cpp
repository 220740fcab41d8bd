// Score and hash routers: selection by biased scores with weights from unbiased ones, weights that
// sum to route_scale (equal shares when every selected affinity underflows), the hash table (rows
// that repeat an expert, an int64 table cast to int32), tie order, bad token ids and bad
// hyper-parameters reported without a crash.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "dsv4/moe/router.hpp"
#include "moe/random_weights.hpp"

namespace {

using dsv4::index_t;

// sqrt(softplus(x . gate_e)) in double, independent of the library.
std::vector<double> reference_affinity(const std::vector<float>& gate, const float* x, index_t n_experts,
                                       index_t d) {
  std::vector<double> s(static_cast<std::size_t>(n_experts));
  for (index_t e = 0; e < n_experts; ++e) {
    double l = 0;
    for (index_t c = 0; c < d; ++c) l += double(gate[static_cast<std::size_t>(e * d + c)]) * x[c];
    s[static_cast<std::size_t>(e)] = std::sqrt(std::log1p(std::exp(l)));
  }
  return s;
}

struct route_buffers {
  std::vector<std::int32_t> ids;
  std::vector<float> weights, scores;
  index_t n, k, e;
  route_buffers(index_t n_, index_t k_, index_t e_)
      : ids(static_cast<std::size_t>(n_ * k_), -7),
        weights(static_cast<std::size_t>(n_ * k_), -7.0f),
        scores(static_cast<std::size_t>(n_ * e_)),
        n(n_),
        k(k_),
        e(e_) {}
  dsv4::moe::routes view() {
    return {{ids.data(), {n, k}}, {weights.data(), {n, k}}, {scores.data(), {n, e}}};
  }
};

constexpr index_t d = 24, n_experts = 8;

}  // namespace

TEST_CASE("router: selection uses the biased scores, weights the unbiased ones") {
  const auto gate = dsv4::test::random_normal(n_experts * d, 1, 0.3f);
  const auto x = dsv4::test::random_normal(d, 2);
  const auto s = reference_affinity(gate, x.data(), n_experts, d);
  // Bias the two experts of lowest affinity up so that they win the selection.
  std::vector<int> by_score(n_experts);
  std::iota(by_score.begin(), by_score.end(), 0);
  std::sort(by_score.begin(), by_score.end(), [&](int a, int b) { return s[a] > s[b]; });
  std::vector<float> bias = dsv4::test::random_normal(n_experts, 3, 0.01f);
  bias[by_score[7]] += 5.0f;
  bias[by_score[6]] += 4.0f;

  const dsv4::moe::score_router<dsv4::f32_matrix> r{
      {{gate.data(), {n_experts, d}}}, {bias.data(), {n_experts}}, 2, 1.5f};
  route_buffers out(1, 2, n_experts);
  REQUIRE(r.route({{x.data(), {1, d}}, {}}, out.view()).ok());
  CHECK(out.ids == std::vector<std::int32_t>{by_score[7], by_score[6]});  // not the unbiased top two
  const double sum = s[by_score[7]] + s[by_score[6]];
  CHECK(out.weights[0] == Approx(1.5 * s[by_score[7]] / sum).epsilon(1e-6));
  CHECK(out.weights[1] == Approx(1.5 * s[by_score[6]] / sum).epsilon(1e-6));
  for (index_t e = 0; e < n_experts; ++e) CHECK(out.scores[e] == Approx(s[e]).epsilon(1e-6));
}

TEST_CASE("router: weights sum to route_scale and follow the biased top-k") {
  const index_t n = 50, k = 3;
  const auto gate = dsv4::test::random_normal(n_experts * d, 4, 0.5f);
  const auto x = dsv4::test::random_normal(n * d, 5);
  const auto bias = dsv4::test::random_normal(n_experts, 6, 0.2f);
  const dsv4::moe::score_router<dsv4::f32_matrix> r{
      {{gate.data(), {n_experts, d}}}, {bias.data(), {n_experts}}, k, 2.5f};
  route_buffers out(n, k, n_experts);
  REQUIRE(r.route({{x.data(), {n, d}}, {}}, out.view()).ok());
  for (index_t t = 0; t < n; ++t) {
    const auto s = reference_affinity(gate, x.data() + t * d, n_experts, d);
    std::vector<int> order(n_experts);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return s[a] + bias[a] > s[b] + bias[b]; });
    float sum = 0;
    for (index_t j = 0; j < k; ++j) {
      CHECK(out.ids[t * k + j] == order[j]);
      sum += out.weights[t * k + j];
    }
    CHECK(sum == Approx(2.5f).epsilon(1e-6));
  }
}

TEST_CASE("router: equal scores select the lower expert id first") {
  auto gate = dsv4::test::random_normal(n_experts * d, 7, 0.3f);
  const auto x = dsv4::test::random_normal(d, 8);
  for (index_t c = 0; c < d; ++c)
    gate[5 * d + c] = gate[2 * d + c] = 3.0f * std::abs(gate[2 * d + c]) * (x[c] > 0 ? 1.0f : -1.0f);
  const dsv4::moe::score_router<dsv4::f32_matrix> r{{{gate.data(), {n_experts, d}}}, {}, 2, 1.0f};
  route_buffers out(1, 2, n_experts);
  REQUIRE(r.route({{x.data(), {1, d}}, {}}, out.view()).ok());
  CHECK(out.ids == std::vector<std::int32_t>{2, 5});
  CHECK(out.weights[0] == out.weights[1]);
}

TEST_CASE("router: hash routing takes the experts from tid2eid and weights from the affinities") {
  const index_t n = 6, k = 3, vocab = 11;
  const auto gate = dsv4::test::random_normal(n_experts * d, 9, 0.4f);
  const auto x = dsv4::test::random_normal(n * d, 10);
  std::vector<std::int32_t> table(static_cast<std::size_t>(vocab * k));
  for (std::size_t i = 0; i < table.size(); ++i)
    table[i] = static_cast<std::int32_t>((i * 5 + i / 3) % n_experts);
  const std::vector<std::int32_t> ids = {3, 0, 10, 3, 7, 1};
  const dsv4::moe::hash_router<dsv4::f32_matrix, std::int32_t> r{
      {{gate.data(), {n_experts, d}}}, {table.data(), {vocab, k}}, 1.5f};
  route_buffers out(n, k, n_experts);
  REQUIRE(r.route({{x.data(), {n, d}}, ids}, out.view()).ok());
  for (index_t t = 0; t < n; ++t) {
    const auto s = reference_affinity(gate, x.data() + t * d, n_experts, d);
    double sum = 0;
    for (index_t j = 0; j < k; ++j) sum += s[table[ids[t] * k + j]];
    for (index_t j = 0; j < k; ++j) {
      const auto e = table[static_cast<std::size_t>(ids[t] * k + j)];
      CHECK(out.ids[t * k + j] == e);
      CHECK(out.weights[t * k + j] == Approx(1.5 * s[e] / sum).epsilon(1e-6));
    }
  }
}

TEST_CASE("router: token ids outside the vocabulary and bad table entries are errors, not crashes") {
  const index_t k = 2, vocab = 5;
  const auto gate = dsv4::test::random_normal(n_experts * d, 11);
  const auto x = dsv4::test::random_normal(3 * d, 12);
  std::vector<std::int32_t> table = {0, 1, 2, 3, 4, 5, 6, 7, 1, 9};  // tid2eid[4][1] = 9 names no expert
  const dsv4::moe::hash_router<dsv4::f32_matrix, std::int32_t> r{
      {{gate.data(), {n_experts, d}}}, {table.data(), {vocab, k}}, 1.0f};
  route_buffers out(3, k, n_experts);
  for (const std::vector<std::int32_t>& ids :
       {std::vector<std::int32_t>{0, 1, 5}, std::vector<std::int32_t>{0, -1, 2}}) {
    const auto st = r.route({{x.data(), {3, d}}, ids}, out.view());
    CHECK(st.code() == dsv4::errc::invalid_argument);
    CHECK(st.message().find("outside the vocabulary") != std::string::npos);
  }
  const auto st = r.route({{x.data(), {3, d}}, std::vector<std::int32_t>{0, 4, 1}}, out.view());
  CHECK(st.code() == dsv4::errc::invalid_argument);
  CHECK(st.message().find("tid2eid[4][1] = 9") != std::string::npos);
  CHECK(r.route({{x.data(), {3, d}}, std::vector<std::int32_t>{0, 1}}, out.view()).code() ==
        dsv4::errc::shape_mismatch);
  CHECK(std::all_of(out.ids.begin(), out.ids.end(), [](std::int32_t v) { return v == -7; }));  // untouched
}

TEST_CASE("router: logits far below -104 give finite equal weights that sum to route_scale") {
  // Every logit about -300 (negative gate rows against positive inputs): sqrt(softplus(l)) is 0 in
  // fp32 below about -104, so the k selected affinities of every token are 0.
  const index_t n = 5, k = 3;
  auto gate = dsv4::test::random_normal(n_experts * d, 21);
  for (float& g : gate) g = -10.0f * (std::abs(g) + 0.5f);
  auto x = dsv4::test::random_normal(n * d, 22);
  for (float& v : x) v = std::abs(v) + 0.1f;
  const auto bias = dsv4::test::random_normal(n_experts, 23, 0.1f);
  std::vector<int> by_bias(n_experts);
  std::iota(by_bias.begin(), by_bias.end(), 0);
  std::sort(by_bias.begin(), by_bias.end(), [&](int a, int b) { return bias[a] > bias[b]; });

  const dsv4::moe::score_router<dsv4::f32_matrix> r{
      {{gate.data(), {n_experts, d}}}, {bias.data(), {n_experts}}, k, 1.5f};
  route_buffers out(n, k, n_experts);
  REQUIRE(r.route({{x.data(), {n, d}}, {}}, out.view()).ok());
  CHECK(std::all_of(out.scores.begin(), out.scores.end(), [](float s) { return s == 0.0f; }));  // underflowed
  for (index_t t = 0; t < n; ++t) {
    for (index_t j = 0; j < k; ++j) {
      CHECK(out.ids[t * k + j] == by_bias[j]);  // the bias alone decides
      CHECK(out.weights[t * k + j] == 1.5f / 3.0f);
    }
  }

  // The hash router mixes with the same rule.
  std::vector<std::int32_t> table = {4, 1, 6, 0, 2, 7};  // (2, 3)
  const dsv4::moe::hash_router<dsv4::f32_matrix, std::int32_t> h{
      {{gate.data(), {n_experts, d}}}, {table.data(), {2, k}}, 2.5f};
  const std::vector<std::int32_t> ids = {1, 0, 0, 1, 1};
  REQUIRE(h.route({{x.data(), {n, d}}, ids}, out.view()).ok());
  for (float w : out.weights) CHECK(w == 2.5f / 3.0f);
}

TEST_CASE("router: a tid2eid row that names an expert twice is rejected, naming the token and the row") {
  const index_t k = 3, vocab = 6, n = 4;
  const auto gate = dsv4::test::random_normal(n_experts * d, 24);
  const auto x = dsv4::test::random_normal(n * d, 25);
  std::vector<std::int32_t> table(static_cast<std::size_t>(vocab * k));
  for (std::size_t i = 0; i < table.size(); ++i)
    table[i] = static_cast<std::int32_t>((i * 5 + i / 3) % n_experts);
  table[4 * k + 0] = 2, table[4 * k + 1] = 5, table[4 * k + 2] = 2;  // row 4 repeats expert 2
  const dsv4::moe::hash_router<dsv4::f32_matrix, std::int32_t> r{
      {{gate.data(), {n_experts, d}}}, {table.data(), {vocab, k}}, 1.5f};
  route_buffers out(n, k, n_experts);
  const auto st = r.route({{x.data(), {n, d}}, std::vector<std::int32_t>{0, 3, 4, 1}}, out.view());
  CHECK(st.code() == dsv4::errc::invalid_argument);
  CHECK(st.message().find("token_ids[2] = 4") != std::string::npos);
  CHECK(st.message().find("tid2eid[4] = (2, 5, 2) names expert 2 twice") != std::string::npos);
  CHECK(std::all_of(out.ids.begin(), out.ids.end(), [](std::int32_t v) { return v == -7; }));
  CHECK(std::all_of(out.weights.begin(), out.weights.end(), [](float v) { return v == -7.0f; }));
  // The same batch without token 4 routes.
  CHECK(r.route({{x.data(), {n, d}}, std::vector<std::int32_t>{0, 3, 5, 1}}, out.view()).ok());
}

TEST_CASE("router: an int64 table read as int32 by a cast of its bytes is rejected") {
  // The checkpoint's int64 tid2eid viewed as int32 (vocab, k): every other entry is a high half, 0.
  const index_t k = 6, vocab = 10, n = 3;
  const index_t experts = 16;
  const auto gate = dsv4::test::random_normal(experts * d, 26);
  const auto x = dsv4::test::random_normal(n * d, 27);
  std::vector<std::int64_t> table(static_cast<std::size_t>(vocab * k));
  for (std::size_t i = 0; i < table.size(); ++i)
    table[i] = static_cast<std::int64_t>(1 + (i * 7 + i / 6) % 15);
  const dsv4::moe::hash_router<dsv4::f32_matrix, std::int32_t> raw{
      {{gate.data(), {experts, d}}}, {reinterpret_cast<const std::int32_t*>(table.data()), {vocab, k}}, 1.5f};
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n * k), -7);
  std::vector<float> w(ids.size()), scores(static_cast<std::size_t>(n * experts));
  const auto st = raw.route({{x.data(), {n, d}}, std::vector<std::int32_t>{1, 2, 7}},
                            {{ids.data(), {n, k}}, {w.data(), {n, k}}, {scores.data(), {n, experts}}});
  CHECK(st.code() == dsv4::errc::invalid_argument);
  CHECK(st.message().find("names expert 0 twice") != std::string::npos);
  CHECK(std::all_of(ids.begin(), ids.end(), [](std::int32_t v) { return v == -7; }));
}

TEST_CASE("router: route_scale must be finite and positive, k from 1 to n_experts") {
  const auto gate = dsv4::test::random_normal(n_experts * d, 28);
  const auto x = dsv4::test::random_normal(2 * d, 29);
  std::vector<std::int32_t> table = {0, 1, 2, 3};  // (2, 2)
  for (const float scale :
       {0.0f, -1.5f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    INFO("route_scale " << scale);
    route_buffers out(2, 2, n_experts);
    const dsv4::moe::score_router<dsv4::f32_matrix> s{{{gate.data(), {n_experts, d}}}, {}, 2, scale};
    auto st = s.route({{x.data(), {2, d}}, {}}, out.view());
    CHECK(st.code() == dsv4::errc::invalid_argument);
    CHECK(st.message().find("route_scale") != std::string::npos);
    const dsv4::moe::hash_router<dsv4::f32_matrix, std::int32_t> h{
        {{gate.data(), {n_experts, d}}}, {table.data(), {2, 2}}, scale};
    st = h.route({{x.data(), {2, d}}, std::vector<std::int32_t>{0, 1}}, out.view());
    CHECK(st.code() == dsv4::errc::invalid_argument);
    CHECK(st.message().find("route_scale") != std::string::npos);
    CHECK(std::all_of(out.weights.begin(), out.weights.end(), [](float v) { return v == -7.0f; }));
  }
  for (const index_t k : {index_t{0}, index_t{-1}, n_experts + 1}) {
    route_buffers out(2, std::max<index_t>(k, 1), n_experts);
    const dsv4::moe::score_router<dsv4::f32_matrix> s{{{gate.data(), {n_experts, d}}}, {}, k, 1.5f};
    CHECK(s.route({{x.data(), {2, d}}, {}}, out.view()).code() == dsv4::errc::invalid_argument);
    CHECK(std::all_of(out.weights.begin(), out.weights.end(), [](float v) { return v == -7.0f; }));
  }
}
