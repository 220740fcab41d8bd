// RoPE, compressor, indexer top-k and the sparse attention core, each against independent
// formulas in double precision or hand-computed cases.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "attn/attn_test_support.hpp"
#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/indexer.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/attn/sparse_attention.hpp"
#include "dsv4/core/parallel.hpp"
#include "fixture.hpp"

namespace {
using namespace dsv4;

double dot_double(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}
}  // namespace

TEST_CASE("plain RoPE rotates interleaved pairs of the trailing dims by t * theta^(-2i/r)", "[attn][rope]") {
  const auto table = attn::rope_table::plain(8, 10000.0f);
  std::mt19937 rng(1);
  const auto x = test::normal(12, 0.0f, 1.0f, rng);  // 4 nope + 8 rope
  auto y = x;
  table.apply(y, 37);
  for (int i = 0; i < 4; ++i) CHECK(y[std::size_t(i)] == x[std::size_t(i)]);
  for (int i = 0; i < 4; ++i) {
    const double a = 37.0 * std::pow(10000.0, -2.0 * i / 8), c = std::cos(a), s = std::sin(a);
    const double re = x[std::size_t(4 + 2 * i)], im = x[std::size_t(5 + 2 * i)];
    CHECK(y[std::size_t(4 + 2 * i)] == Approx(re * c - im * s).margin(1e-5));
    CHECK(y[std::size_t(5 + 2 * i)] == Approx(im * c + re * s).margin(1e-5));
  }
  table.apply(y, 37, /*inverse=*/true);
  CHECK(test::rel_l2(y, x) <= 1e-6);
}

TEST_CASE("YaRN keeps high frequencies, divides low ones by the factor, no mscale", "[attn][rope]") {
  // Released values (spec §4.3): theta 160k, 64 dims, factor 16 over 65,536: ramp from pair 15 to 25.
  const auto plain = attn::rope_table::plain(64, 160000.0f);
  const auto yarn = attn::rope_table::yarn(64, 160000.0f, 16.0f, 65536, 32.0f, 1.0f);
  const auto p = plain.inv_freq(), f = yarn.inv_freq();
  for (int i = 0; i < 32; ++i) {
    const double ramp = std::clamp((i - 15.0) / 10.0, 0.0, 1.0);
    CHECK(f[std::size_t(i)] == Approx(p[std::size_t(i)] * (ramp / 16 + (1 - ramp))).epsilon(1e-6));
  }
  CHECK(f[15] == p[15]);
  CHECK(f[25] == Approx(p[25] / 16).epsilon(1e-6));
  // No temperature: a rotation keeps the norm.
  std::mt19937 rng(2);
  auto x = test::normal(64, 0.0f, 1.0f, rng);
  const double n0 = std::sqrt(dot_double(x, x));
  yarn.apply(x, 1000003);
  CHECK(std::sqrt(dot_double(x, x)) == Approx(n0).epsilon(1e-5));
}

TEST_CASE("RoPE scores depend on the relative position only", "[attn][rope]") {
  const auto table = attn::rope_table::for_layer(config::model_params{}, 16, true);
  std::mt19937 rng(3);
  const auto a = test::normal(16, 0.0f, 1.0f, rng), b = test::normal(16, 0.0f, 1.0f, rng);
  const auto score = [&](index_t s, index_t t) {
    auto qa = a, kb = b;
    table.apply(qa, s);
    table.apply(kb, t);
    return dot_double(qa, kb);
  };
  CHECK(score(100, 40) == Approx(score(1060, 1000)).margin(1e-4));
  CHECK(score(100, 40) != Approx(score(100, 41)).margin(1e-4));
}

namespace {
// The projections a compressor step takes: kv = wkv x and gate = wgate x, one token x (1, d).
std::pair<std::vector<float>, std::vector<float>> project(const attn::compressor_weights<>& w,
                                                          tensor_view<const float, 2> x) {
  std::vector<float> kv(std::size_t(w.wkv.rows())), gate(kv.size());
  REQUIRE(linear(w.wkv, x, {kv.data(), {1, w.wkv.rows()}}).ok());
  REQUIRE(linear(w.wgate, x, {gate.data(), {1, w.wgate.rows()}}).ok());
  return {kv, gate};
}

// Independent form of a compressed entry (spec §6.1, paper order): entry i pools, per channel,
// the own-window series C^a (last c channels) of tokens [m i, m(i+1)) and the previous-window
// series C^b (first c channels) of tokens [m(i-1), m i), softmax over the 2m scores; then norm
// and RoPE at m i.
std::vector<float> reference_entry(const attn::compressor_shape& s, const test::tensor_store& w,
                                   const std::vector<float>& x, index_t d, index_t i,
                                   const attn::rope_table& rope) {
  const auto wkv = w.view2("c.wkv"), wgate = w.view2("c.wgate"), ape = w.view2("c.ape");
  const int m = s.ratio, dim = s.dim;
  std::vector<double> num(std::size_t(dim), 0.0), den(std::size_t(dim), 0.0);
  const auto add = [&](index_t token, int channel_offset, int c) {
    double kv = 0, z = ape(token % m, channel_offset + c);
    for (index_t k = 0; k < d; ++k) {
      kv += double(wkv(channel_offset + c, k)) * x[std::size_t(token * d + k)];
      z += double(wgate(channel_offset + c, k)) * x[std::size_t(token * d + k)];
    }
    num[std::size_t(c)] += std::exp(z) * kv;
    den[std::size_t(c)] += std::exp(z);
  };
  for (int c = 0; c < dim; ++c) {
    for (index_t tok = m * i; tok < m * (i + 1); ++tok) add(tok, s.overlap ? dim : 0, c);
    if (s.overlap && i > 0)
      for (index_t tok = m * (i - 1); tok < m * i; ++tok) add(tok, 0, c);
  }
  // RMSNorm in double, then RoPE at the block start.
  double ms = 0;
  for (int c = 0; c < dim; ++c) ms += std::pow(num[std::size_t(c)] / den[std::size_t(c)], 2) / dim;
  const auto norm = w.view1("c.norm");
  std::vector<float> e(static_cast<std::size_t>(dim));
  for (int c = 0; c < dim; ++c)
    e[std::size_t(c)] = float(norm(c) * (num[std::size_t(c)] / den[std::size_t(c)]) / std::sqrt(ms + 1e-6));
  rope.apply(e, i * m);
  return e;
}

void check_compressor(const attn::compressor_shape& s, index_t tokens) {
  const index_t d = 24;
  std::mt19937 rng(4 + unsigned(s.ratio));
  test::tensor_store w;
  w.add("c.wkv", {s.channels(), d}, test::normal(std::size_t(s.channels() * d), 0.0f, 0.3f, rng));
  w.add("c.wgate", {s.channels(), d}, test::normal(std::size_t(s.channels() * d), 0.0f, 0.3f, rng));
  w.add("c.ape", {s.ratio, s.channels()}, test::normal(std::size_t(s.ratio * s.channels()), 0.0f, 1.0f, rng));
  w.add("c.norm", {s.dim}, test::normal(std::size_t(s.dim), 1.0f, 0.2f, rng));
  const attn::compressor_weights<> cw = test::compressor_views(w, "c");
  REQUIRE(attn::check_compressor(s, cw, d, "c").ok());
  const auto rope = attn::rope_table::for_layer(config::model_params{}, 8, true);
  const auto x = test::normal(std::size_t(tokens * d), 0.0f, 1.0f, rng);

  std::vector<float> tails(std::size_t(attn::compressor_state::floats(s, s.rows())));
  const attn::compressor_state state(s, s.rows(), tails.data(), tails.data() + tails.size() / 2);
  std::vector<float> entry(std::size_t(s.dim));
  index_t emitted = 0;
  for (index_t t = 0; t < tokens; ++t) {
    const auto [kv, gate] = project(cw, {x.data() + t * d, {1, d}});
    const bool closed = state.step(cw, rope, 1e-6f, t, kv, gate, entry);
    CHECK(closed == ((t + 1) % s.ratio == 0));
    if (!closed) continue;
    const auto ref = reference_entry(s, w, x, d, emitted++, rope);
    INFO("ratio " << s.ratio << " entry " << emitted - 1);
    CHECK(test::rel_l2(entry, ref) <= 1e-5);
  }
  CHECK(emitted == tokens / s.ratio);
}
}  // namespace

TEST_CASE("overlapping and non-overlapping compressors match the report's pooling formula",
          "[attn][compressor]") {
  check_compressor({4, 16, true}, 41);
  check_compressor({16, 16, false}, 50);
  check_compressor({2, 8, false}, 9);
}

TEST_CASE("a ratio-1 compressor is its projection, norm and RoPE at the token", "[attn][compressor]") {
  const attn::compressor_shape s{1, 16, false};
  check_compressor(s, 5);
  // Directly: softmax over one row is 1, whatever the gate.
  const index_t d = 8;
  std::mt19937 rng(9);
  test::tensor_store w;
  w.add("c.wkv", {16, d}, test::normal(16 * d, 0.0f, 0.3f, rng));
  w.add("c.wgate", {16, d}, test::normal(16 * d, 0.0f, 3.0f, rng));
  w.add("c.ape", {1, 16}, test::normal(16, 0.0f, 3.0f, rng));
  w.add("c.norm", {16}, test::normal(16, 1.0f, 0.2f, rng));
  const auto rope = attn::rope_table::plain(8, 10000.0f);
  std::vector<float> tails(std::size_t(attn::compressor_state::floats(s, s.rows())));
  const attn::compressor_state state(s, s.rows(), tails.data(), tails.data() + tails.size() / 2);
  const auto x = test::normal(std::size_t(3 * d), 0.0f, 1.0f, rng);
  std::vector<float> entry(16), proj(16);
  for (index_t t = 0; t < 3; ++t) {
    const auto [kv, gate] = project(test::compressor_views(w, "c"), {x.data() + t * d, {1, d}});
    REQUIRE(state.step(test::compressor_views(w, "c"), rope, 1e-6f, t, kv, gate, entry));
    proj = kv;
    double ms = 0;
    for (float v : proj) ms += double(v) * v / 16;
    for (std::size_t i = 0; i < 16; ++i)
      proj[i] = float(w.view1("c.norm")(i) * proj[i] / std::sqrt(ms + 1e-6));
    rope.apply(proj, t);
    CHECK(test::rel_l2(entry, proj) <= 1e-6);
  }
}

TEST_CASE("top-k selects by score, ties by lower index, in ascending order", "[attn][indexer]") {
  const std::vector<float> scores = {0.5f, 2.0f, 0.0f, 2.0f, -1.0f, 0.0f, 0.0f, 3.0f};
  std::vector<std::int32_t> sel(scores.size());
  REQUIRE(attn::select_top_k(scores, 3, sel) == 3);
  CHECK(std::vector<std::int32_t>(sel.begin(), sel.begin() + 3) == std::vector<std::int32_t>{1, 3, 7});
  REQUIRE(attn::select_top_k(scores, 5, sel) == 5);
  CHECK(std::vector<std::int32_t>(sel.begin(), sel.begin() + 5) == std::vector<std::int32_t>{0, 1, 2, 3, 7});
  REQUIRE(attn::select_top_k(scores, 20, sel) == 8);
  CHECK(sel[7] == 7);

  // A list long enough to be cut down by a sampled bound, with many ties (scores on a coarse
  // grid), against a full sort by the same rule.
  std::mt19937 rng(3);
  std::vector<float> many(100003);
  for (float& v : many) v = float(int(rng() % 4000)) * 0.25f;
  std::vector<std::int32_t> order(many.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = std::int32_t(i);
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return many[std::size_t(a)] > many[std::size_t(b)] ||
           (many[std::size_t(a)] == many[std::size_t(b)] && a < b);
  });
  for (index_t k : {1, 512, 1024}) {
    std::sort(order.begin(), order.begin() + k);
    std::vector<std::int32_t> got(many.size());
    REQUIRE(attn::select_top_k(many, k, got) == k);
    CHECK(std::equal(order.begin(), order.begin() + k, got.begin()));
    std::sort(order.begin(), order.begin() + k, [&](std::int32_t a, std::int32_t b) {
      return many[std::size_t(a)] > many[std::size_t(b)] ||
             (many[std::size_t(a)] == many[std::size_t(b)] && a < b);
    });
  }
}

TEST_CASE("top-k of long lists: normal scores, a bound the sample sets too high, signed zeros",
          "[attn][indexer]") {
  // The best k by the rule, from a full sort.
  const auto expected = [](const std::vector<float>& s, index_t k) {
    std::vector<std::int32_t> order(s.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = std::int32_t(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::int32_t a, std::int32_t b) { return s[std::size_t(a)] > s[std::size_t(b)]; });
    order.resize(std::size_t(k));
    std::sort(order.begin(), order.end());
    return order;
  };
  const auto selected = [](const std::vector<float>& s, index_t k) {
    std::vector<std::int32_t> got(s.size());
    REQUIRE(attn::select_top_k(s, k, got) == k);
    got.resize(std::size_t(k));
    return got;
  };
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  for (const index_t n : {16381, 262147}) {
    std::vector<float> s(static_cast<std::size_t>(n));
    for (float& v : s) v = normal(rng);
    INFO("n " << n);
    CHECK(selected(s, 512) == expected(s, 512));
  }
  // Only the sampled positions (every 16th of 65,536) score high, so the sample's bound keeps
  // fewer than k: every score is then considered.
  std::vector<float> sampled(65536, 0.0f);
  for (std::size_t j = 0; j < sampled.size(); j += 16) sampled[j] = 100.0f + float(j);
  CHECK(selected(sampled, 512) == expected(sampled, 512));
  // -0 and +0 are equal scores: the lower index goes first.
  const std::vector<float> zeros = {-0.0f, -0.0f, 0.0f, -1.0f, 1.0f};
  CHECK(selected(zeros, 2) == std::vector<std::int32_t>{0, 4});
}

TEST_CASE("top-k ranks NaN below every number, whatever its sign, in short and long lists",
          "[attn][indexer]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const auto selected = [](const std::vector<float>& s, index_t k) {
    std::vector<std::int32_t> got(s.size());
    REQUIRE(attn::select_top_k(s, k, got) == k);
    got.resize(std::size_t(k));
    return got;
  };
  // The best k by the rule, from a full sort: numbers by value, then NaNs, ties to the lower index.
  const auto expected = [](const std::vector<float>& s, index_t k) {
    std::vector<std::int32_t> order(s.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = std::int32_t(i);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      const float x = s[std::size_t(a)], y = s[std::size_t(b)];
      return std::isnan(x) != std::isnan(y) ? std::isnan(y) : x > y;
    });
    order.resize(std::size_t(k));
    std::sort(order.begin(), order.end());
    return order;
  };
  const std::vector<float> few = {nan, -inf, 1.0f, -nan, 0.5f};
  CHECK(selected(few, 2) == std::vector<std::int32_t>{2, 4});
  CHECK(selected(few, 3) == std::vector<std::int32_t>{1, 2, 4});
  CHECK(selected(few, 4) == std::vector<std::int32_t>{0, 1, 2, 4});
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (const index_t n : {16384, 100003}) {
    std::vector<float> s(static_cast<std::size_t>(n));
    for (float& v : s) v = normal(rng);
    for (std::size_t i = 0; i < s.size(); i += 37) s[i] = (i / 37) % 2 ? nan : -nan;
    INFO("n " << n);
    CHECK(selected(s, 512) == expected(s, 512));
  }
}

TEST_CASE("index scores are the head-weighted sum of ReLU dot products", "[attn][indexer]") {
  std::mt19937 rng(10);
  // 5 keys (one partial GEMM block) and 1100 (several blocks over several lanes).
  for (const index_t n : {5, 1100}) {
    const index_t heads = 3, c = 8;
    const auto q = test::normal(std::size_t(heads * c), 0.0f, 1.0f, rng);
    const auto keys = test::normal(std::size_t(n * c), 0.0f, 1.0f, rng);
    const auto w = test::normal(std::size_t(heads), 0.0f, 1.0f, rng);
    std::vector<float> scores(static_cast<std::size_t>(n));
    std::vector<float> work(std::size_t(attn::indexer_workspace_floats(heads, c, n)));
    attn::indexer_scores({q.data(), {heads, c}}, w, {keys.data(), {n, c}}, scores, work);
    for (index_t s = 0; s < n; ++s) {
      double ref = 0;
      for (index_t h = 0; h < heads; ++h) {
        double qk = 0;
        for (index_t i = 0; i < c; ++i)
          qk += double(q[std::size_t(h * c + i)]) * keys[std::size_t(s * c + i)];
        ref += w[std::size_t(h)] * std::max(0.0, qk);
      }
      INFO("n " << n << " key " << s);
      CHECK(scores[std::size_t(s)] == Approx(ref).margin(1e-5));
    }
  }
}

// With one chunk the heads are split into groups of whole 16-head slivers, each a task of its
// own: every head's output must be the very bits it gets when it is the only head (one group),
// for a head count that splits unevenly (40 = 32 + 8), and both numerics.
namespace {
// One softmax in double over the candidate rows of kv (rows, c) for every head of q (heads, c),
// the sink a zero-valued logit in the denominator: (heads, c).
std::vector<double> softmax_reference(const std::vector<float>& q, const std::vector<float>& kv,
                                      const std::vector<float>& sink, const std::vector<std::int32_t>& list,
                                      index_t c, float scale) {
  const auto heads = static_cast<index_t>(sink.size());
  std::vector<double> ref(std::size_t(heads * c));
  for (index_t h = 0; h < heads; ++h) {
    double den = std::exp(double(sink[std::size_t(h)]));
    std::vector<double> num(std::size_t(c), 0.0);
    for (std::int32_t j : list) {
      if (j < 0) continue;
      double z = 0;
      for (index_t i = 0; i < c; ++i) z += double(q[std::size_t(h * c + i)]) * kv[std::size_t(j * c + i)];
      const double e = std::exp(z * scale);
      den += e;
      for (index_t i = 0; i < c; ++i) num[std::size_t(i)] += e * kv[std::size_t(j * c + i)];
    }
    for (index_t i = 0; i < c; ++i) ref[std::size_t(h * c + i)] = num[std::size_t(i)] / den;
  }
  return ref;
}
}  // namespace

TEST_CASE("sparse attention: a head's output does not depend on the heads beside it", "[attn][core]") {
  using op = attn::sparse_attention_op<attn::f32_codec>;
  std::mt19937 rng(12);
  const index_t c = 48, rows = 300;
  const auto kv = test::normal(std::size_t(rows * c), 0.0f, 1.0f, rng);
  for (const index_t heads : {40, 64})
    for (const index_t n : {1, 100, 128})
      for (const numerics num : {numerics::exact, numerics::released}) {
        CAPTURE(heads, n, num == numerics::released);
        REQUIRE(op::head_groups(heads, n) == 2);
        const auto q = test::normal(std::size_t(heads * c), 0.0f, 1.0f, rng);
        const auto sink = test::normal(std::size_t(heads), 0.0f, 1.0f, rng);
        std::vector<std::int32_t> candidates(static_cast<std::size_t>(n));
        for (auto& j : candidates) j = std::int32_t(rng() % (rows + 1)) - 1;
        const auto attend = [&](index_t h0, index_t count, float* out) {
          std::vector<float> workspace(std::size_t(op::workspace_floats(count, c, n)));
          const op::params p{.q = {q.data() + h0 * c, {count, c}},
                             .kv = attn::f32_rows({kv.data(), {rows, c}}),
                             .candidates = candidates,
                             .sink = {sink.data() + h0, {count}},
                             .scale = 1.0f / std::sqrt(float(c)),
                             .out = {out, {count, c}},
                             .workspace = workspace,
                             .num = num};
          REQUIRE(run<cpu>(p).ok());
        };
        std::vector<float> all(static_cast<std::size_t>(heads * c)), one(static_cast<std::size_t>(c));
        attend(0, heads, all.data());
        index_t differing = 0;
        for (index_t h = 0; h < heads; ++h) {
          attend(h, 1, one.data());
          differing += std::memcmp(one.data(), all.data() + h * c, c * sizeof(float)) != 0;
        }
        CHECK(differing == 0);
      }
}

TEST_CASE(
    "sparse attention: one softmax over the candidates with the sink in the denominator; released numerics",
    "[attn][core]") {
  std::mt19937 rng(11);
  const index_t heads = 3, c = 20, rows = 9;
  const auto q = test::normal(std::size_t(heads * c), 0.0f, 1.0f, rng);
  const auto kv = test::normal(std::size_t(rows * c), 0.0f, 1.0f, rng);
  const auto sink = test::normal(std::size_t(heads), 0.0f, 1.0f, rng);
  // 600 candidates (4 chunks), -1 among them, every row many times: there is no de-duplication.
  std::vector<std::int32_t> candidates(600);
  for (auto& j : candidates) j = std::int32_t(rng() % (rows + 1)) - 1;
  std::vector<float> out(std::size_t(heads * c));
  std::vector<float> workspace(
      std::size_t(attn::sparse_attention_op<attn::f32_codec>::workspace_floats(heads, c, 600)));
  const float scale = 1.0f / std::sqrt(float(c));
  const attn::sparse_attention_op<attn::f32_codec>::params p{.q = {q.data(), {heads, c}},
                                                             .kv = attn::f32_rows({kv.data(), {rows, c}}),
                                                             .candidates = candidates,
                                                             .sink = {sink.data(), {heads}},
                                                             .scale = scale,
                                                             .out = {out.data(), {heads, c}},
                                                             .workspace = workspace};
  REQUIRE(attn::sparse_attention_op<attn::f32_codec>::check(p).ok());
  REQUIRE(run<cpu>(p).ok());
  const auto reference = softmax_reference(q, kv, sink, candidates, c, scale);
  for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == Approx(reference[i]).margin(1e-5));
  // Released numerics: BF16 probabilities weight the rows and the output is BF16, so each value
  // is a BF16 and within a few BF16 ulps of the kv scale from the exact softmax.
  auto released = p;
  std::vector<float> out_released(out.size());
  released.out = {out_released.data(), {heads, c}};
  released.num = numerics::released;
  REQUIRE(run<cpu>(released).ok());
  float kv_max = 0;
  for (float v : kv) kv_max = std::max(kv_max, std::fabs(v));
  for (std::size_t i = 0; i < out.size(); ++i) {
    CHECK(out_released[i] == round_to_bf16(out_released[i]));
    CHECK(std::fabs(out_released[i] - reference[i]) <= 0x1p-8 * kv_max);
  }
  CHECK(out_released != out);
  // The second of the four chunks (150 candidates each) all -1, in a workspace full of NaN: that
  // chunk adds nothing, and nothing left in the workspace reaches the output.
  std::vector<std::int32_t> gap(candidates);
  std::fill(gap.begin() + 150, gap.begin() + 300, -1);
  std::fill(workspace.begin(), workspace.end(), std::nanf(""));
  auto gapped = p;
  gapped.candidates = gap;
  std::vector<float> out_gap(out.size());
  gapped.out = {out_gap.data(), {heads, c}};
  REQUIRE(run<cpu>(gapped).ok());
  const auto gap_reference = softmax_reference(q, kv, sink, gap, c, scale);
  for (std::size_t i = 0; i < out.size(); ++i) CHECK(out_gap[i] == Approx(gap_reference[i]).margin(1e-5));
  // No candidate at all: the sink takes all the mass.
  auto empty = p;
  empty.candidates = {};
  REQUIRE(run<cpu>(empty).ok());
  for (float v : out) CHECK(v == 0.0f);
  // A candidate outside the kv rows is refused before anything is written.
  const std::vector<std::int32_t> bad = {0, 9};
  auto outside = p;
  outside.candidates = bad;
  const status st = attn::sparse_attention_op<attn::f32_codec>::check(outside);
  CHECK(st.code() == errc::out_of_range);
  CHECK_THAT(st.message(), Catch::Contains("row 9"));
}

TEST_CASE("attention outputs are bit-identical for 1 and 2 threads", "[attn][core]") {
  // 3000 candidates make 16 chunks of two blocks (the second rescales what the first summed);
  // 40 heads make three merge tasks (16, 16, 8 heads), and 72 values a row leave a tail after the
  // merge's blocks of 16.
  for (const index_t heads : {8, 40}) {
    std::mt19937 rng(12);
    const index_t c = 72, rows = 3000;
    const auto q = test::normal(std::size_t(heads * c), 0.0f, 1.0f, rng);
    const auto kv = test::normal(std::size_t(rows * c), 0.0f, 1.0f, rng);
    const auto sink = test::normal(std::size_t(heads), 0.0f, 1.0f, rng);
    std::vector<std::int32_t> candidates(static_cast<std::size_t>(rows));
    for (index_t j = 0; j < rows; ++j) candidates[std::size_t(j)] = std::int32_t((j * 7) % rows);
    std::vector<float> one(std::size_t(heads * c)), two(one.size());
    std::vector<float> workspace(
        std::size_t(attn::sparse_attention_op<attn::f32_codec>::workspace_floats(heads, c, rows)));
    const int threads = max_threads();
    for (auto* out : {&one, &two}) {
      set_num_threads(out == &one ? 1 : 2);
      const attn::sparse_attention_op<attn::f32_codec>::params p{{q.data(), {heads, c}},
                                                                 attn::f32_rows({kv.data(), {rows, c}}),
                                                                 candidates,
                                                                 {sink.data(), {heads}},
                                                                 0.125f,
                                                                 {out->data(), {heads, c}},
                                                                 workspace};
      REQUIRE(run<cpu>(p).ok());
    }
    set_num_threads(threads);
    INFO("heads " << heads);
    CHECK(one == two);
    const auto reference = softmax_reference(q, kv, sink, candidates, c, 0.125f);
    std::size_t far = 0;
    for (std::size_t i = 0; i < one.size(); ++i) far += std::fabs(one[i] - reference[i]) > 1e-5;
    CHECK(far == 0);
  }
}

TEST_CASE("sparse attention: the same bits under every executor, tasks in any order", "[attn][core]") {
  // Tasks of the step wait for tasks of the same loop (packing before chunks, chunks before
  // merges). An executor that runs them on one thread, last first, must still finish with the
  // same bits as OpenMP with 1 and 2 threads and spin_pool with 2 and 3.
  struct reversed_executor {
    int threads() const noexcept { return 4; }
    void run(std::int64_t n, task_ref f) noexcept {
      for (std::int64_t i = n - 1; i >= 0; --i) f(i);
    }
  };
  // 3000 candidates: 16 chunks, query packing and merge tasks; 200 with 64 heads: one chunk in
  // two head groups, each merging its own heads.
  for (const auto& [heads, rows] : {std::pair<index_t, index_t>{40, 3000}, {64, 200}}) {
    CAPTURE(heads, rows);
    std::mt19937 rng(31);
    const index_t c = 72;
    const auto q = test::normal(std::size_t(heads * c), 0.0f, 1.0f, rng);
    const auto kv = test::normal(std::size_t(rows * c), 0.0f, 1.0f, rng);
    const auto sink = test::normal(std::size_t(heads), 0.0f, 1.0f, rng);
    std::vector<std::int32_t> candidates(static_cast<std::size_t>(rows));
    for (index_t j = 0; j < rows; ++j) candidates[std::size_t(j)] = std::int32_t((j * 11) % rows);
    using op = attn::sparse_attention_op<attn::f32_codec>;
    std::vector<float> workspace(std::size_t(op::workspace_floats(heads, c, rows)));
    const auto attend = [&] {
      std::vector<float> out(std::size_t(heads * c));
      const op::params p{{q.data(), {heads, c}},
                         attn::f32_rows({kv.data(), {rows, c}}),
                         candidates,
                         {sink.data(), {heads}},
                         0.125f,
                         {out.data(), {heads, c}},
                         workspace};
      REQUIRE(run<cpu>(p).ok());
      return out;
    };
    const int threads = max_threads();
    set_num_threads(1);
    const auto one = attend();
    set_num_threads(2);
    const auto two = attend();
    set_num_threads(threads);
    std::vector<std::vector<float>> pooled;
    for (const int n : {2, 3}) {
      spin_pool pool(n);
      const executor_scope scope(pool);
      pooled.push_back(attend());
    }
    reversed_executor reversed;
    const executor_scope scope(reversed);
    const auto backwards = attend();
    CHECK(one == two);
    CHECK(one == pooled[0]);
    CHECK(one == pooled[1]);
    CHECK(one == backwards);
  }
}
