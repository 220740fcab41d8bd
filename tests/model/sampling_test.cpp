// Token sampling: Philox4x32-10 against Random123's known answers, uniform_at's range, greedy ties,
// draw frequencies against an independent softmax, the sets top-k, top-p and min-p keep, -inf
// bans, reproducibility from (seed, counter), bad parameters and logits reported with the
// workspace untouched, no allocation, and the stop rule.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "allocations.hpp"
#include "dsv4/model/sampling.hpp"
#include "random.hpp"

namespace {

using dsv4::index_t;
using dsv4::model::sample;
using dsv4::model::sampling_params;

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// A workspace for `vocab` logits, filled with a marker byte.
struct sample_ws {
  dsv4::test::aligned_workspace w;
  explicit sample_ws(std::size_t vocab)
      : w(dsv4::model::sample_workspace_bytes(static_cast<index_t>(vocab))) {
    std::fill(w.bytes.begin(), w.bytes.end(), std::byte{0x5a});
  }
  bool untouched() const {
    return std::all_of(w.bytes.begin(), w.bytes.end(), [](std::byte b) { return b == std::byte{0x5a}; });
  }
};

std::int32_t draw(const std::vector<float>& logits, const sampling_params& p, std::uint64_t counter,
                  sample_ws& ws) {
  const auto r = sample(logits, p, counter, ws.w.bytes);
  REQUIRE(r.ok());
  return *r;
}

// How often each token is drawn over counters [0, n).
std::vector<int> histogram(const std::vector<float>& logits, const sampling_params& p, int n) {
  sample_ws ws(logits.size());
  std::vector<int> counts(logits.size(), 0);
  for (int c = 0; c < n; ++c)
    ++counts[static_cast<std::size_t>(draw(logits, p, static_cast<std::uint64_t>(c), ws))];
  return counts;
}

// softmax(logits / t) in double, independent of the library.
std::vector<double> reference_softmax(const std::vector<float>& logits, double t) {
  const double m = *std::max_element(logits.begin(), logits.end()) / t;
  std::vector<double> q(logits.size());
  double s = 0;
  for (std::size_t i = 0; i < q.size(); ++i) s += q[i] = std::exp(logits[i] / t - m);
  for (double& x : q) x /= s;
  return q;
}

// Token ids by probability, descending.
std::vector<int> by_probability(const std::vector<double>& q) {
  std::vector<int> order(q.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return q[a] > q[b]; });
  return order;
}

std::set<int> drawn(const std::vector<int>& counts) {
  std::set<int> s;
  for (std::size_t i = 0; i < counts.size(); ++i)
    if (counts[i] > 0) s.insert(static_cast<int>(i));
  return s;
}

bool names(const dsv4::status& st, const std::string& text) {
  return st.message().find(text) != std::string::npos;
}

}  // namespace

TEST_CASE("sampling: Philox4x32-10 matches Random123's known answers", "[sampling]") {
  // Checked against an independent Python implementation of the same rounds.
  using dsv4::model::philox4x32_10;
  using words = std::array<std::uint32_t, 4>;
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) == words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
  // uniform_at is the top 53 bits of the first two words, counter and seed split low word first.
  const std::uint64_t seed = 0x299f31d0a4093822u, counter = 0x85a308d3243f6a88u;
  const words x = philox4x32_10({0x243f6a88, 0x85a308d3, 0, 0}, {0xa4093822, 0x299f31d0});
  CHECK(dsv4::model::uniform_at(seed, counter) ==
        static_cast<double>((std::uint64_t{x[0]} << 32 | x[1]) >> 11) * 0x1p-53);
}

TEST_CASE("sampling: uniform_at lies in [0, 1), distinct over counters, mean 1/2", "[sampling]") {
  for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{42}, ~std::uint64_t{0}}) {
    std::set<double> seen;
    double sum = 0;
    const int n = 20000;
    for (std::uint64_t c = 0; c < static_cast<std::uint64_t>(n); ++c) {
      const double u = dsv4::model::uniform_at(seed, c);
      CHECK(u >= 0.0);
      CHECK(u < 1.0);
      seen.insert(u);
      sum += u;
    }
    CHECK(seen.size() == static_cast<std::size_t>(n));
    CHECK(std::abs(sum / n - 0.5) < 4 * std::sqrt(1.0 / 12 / n));
  }
  // The high word of the counter counts too.
  CHECK(dsv4::model::uniform_at(7, 5) != dsv4::model::uniform_at(7, 5 + (std::uint64_t{1} << 32)));
}

TEST_CASE("sampling: greedy is the argmax, ties to the lower id, whatever seed and counter", "[sampling]") {
  auto logits = dsv4::test::random_normal(50, 11);
  const float top = *std::max_element(logits.begin(), logits.end());
  logits[31] = logits[12] = top + 1.0f;
  logits[40] = neg_inf;
  sample_ws ws(logits.size());
  for (std::uint64_t seed : {0u, 3u})
    for (std::uint64_t c : {0u, 1u, 999u}) CHECK(draw(logits, {.seed = seed}, c, ws) == 12);
  // Filters do not change the greedy choice.
  CHECK(draw(logits, {.top_k = 3, .top_p = 0.5f, .min_p = 0.5f}, 0, ws) == 12);
  // -0 and +0 are equal scores.
  const std::vector<float> zeros{neg_inf, -0.0f, 0.0f, neg_inf};
  sample_ws ws4(zeros.size());
  CHECK(draw(zeros, {}, 0, ws4) == 1);
}

TEST_CASE("sampling: draw frequencies match the softmax of logits / temperature", "[sampling]") {
  const auto logits = dsv4::test::random_normal(6, 21, 1.5f);
  const int n = 20000;
  for (const float t : {0.7f, 1.0f, 2.5f}) {
    INFO("temperature " << t);
    const auto q = reference_softmax(logits, t);
    const auto counts = histogram(logits, {.temperature = t, .seed = 5}, n);
    for (std::size_t i = 0; i < q.size(); ++i) {
      INFO("token " << i << " p " << q[i] << " count " << counts[i]);
      CHECK(std::abs(counts[i] - n * q[i]) <= 3 * std::sqrt(n * q[i] * (1 - q[i])));
    }
  }
}

TEST_CASE("sampling: top_k = 1 equals greedy at any temperature", "[sampling]") {
  // 5000 logits: select_top_k's sampled bound is in use.
  auto logits = dsv4::test::random_normal(5000, 31, 2.0f);
  sample_ws ws(logits.size());
  const auto greedy = [&] { return draw(logits, {}, 0, ws); };
  for (const float t : {0.05f, 1.0f, 7.0f, 1e6f})
    for (std::uint64_t c = 0; c < 20; ++c)
      CHECK(draw(logits, {.temperature = t, .top_k = 1}, c, ws) == greedy());
  const float top = *std::max_element(logits.begin(), logits.end());
  logits[4000] = logits[900] = top + 0.5f;
  REQUIRE(greedy() == 900);
  for (std::uint64_t c = 0; c < 20; ++c) CHECK(draw(logits, {.temperature = 3.0f, .top_k = 1}, c, ws) == 900);
}

TEST_CASE("sampling: top_k keeps exactly the k largest logits", "[sampling]") {
  const auto logits = dsv4::test::random_normal(40, 41, 0.3f);  // flat: every token is likely
  const auto order = by_probability(reference_softmax(logits, 1.0));
  const auto counts = histogram(logits, {.temperature = 1.0f, .top_k = 4, .seed = 9}, 4000);
  CHECK(drawn(counts) == std::set<int>(order.begin(), order.begin() + 4));
}

TEST_CASE("sampling: top_p keeps the shortest prefix reaching top_p", "[sampling]") {
  const auto logits = dsv4::test::random_normal(12, 51, 1.2f);
  const float t = 1.3f;
  const auto q = reference_softmax(logits, t);
  const auto order = by_probability(q);
  for (const std::size_t keep : {std::size_t{1}, std::size_t{3}, std::size_t{7}}) {
    // top_p midway between the cumulative sums of keep - 1 and keep tokens.
    double before = 0;
    for (std::size_t i = 0; i + 1 < keep; ++i) before += q[order[i]];
    const auto top_p = static_cast<float>(before + q[order[keep - 1]] / 2);
    INFO("keep " << keep << " top_p " << top_p);
    const auto counts = histogram(logits, {.temperature = t, .top_p = top_p, .seed = 13}, 6000);
    CHECK(drawn(counts) == std::set<int>(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep)));
  }
  // With top_k, top_p's cumulative sums are over the k kept tokens.
  const double q3 = q[order[0]] + q[order[1]] + q[order[2]];
  const auto top_p = static_cast<float>((q[order[0]] + q[order[1]] / 2) / q3);  // 2 of the top 3
  const auto counts = histogram(logits, {.temperature = t, .top_k = 3, .top_p = top_p, .seed = 13}, 4000);
  CHECK(drawn(counts) == std::set<int>{order[0], order[1]});
}

TEST_CASE("sampling: min_p drops tokens below min_p times the largest probability", "[sampling]") {
  const auto logits = dsv4::test::random_normal(12, 61, 1.0f);
  const float t = 0.9f;
  const auto q = reference_softmax(logits, t);
  const auto order = by_probability(q);
  for (const std::size_t keep : {std::size_t{1}, std::size_t{4}, std::size_t{9}}) {
    const auto min_p = static_cast<float>((q[order[keep - 1]] + q[order[keep]]) / 2 / q[order[0]]);
    INFO("keep " << keep << " min_p " << min_p);
    const auto counts = histogram(logits, {.temperature = t, .min_p = min_p, .seed = 17}, 8000);
    CHECK(drawn(counts) == std::set<int>(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep)));
  }
}

TEST_CASE("sampling: -inf logits are never drawn", "[sampling]") {
  auto logits = dsv4::test::random_normal(8, 71, 0.2f);
  logits[0] = logits[3] = logits[7] = neg_inf;
  for (const int top_k : {0, 6}) {
    const auto counts = histogram(logits, {.temperature = 1.0f, .top_k = top_k, .seed = 1}, 4000);
    CHECK(drawn(counts) == std::set<int>{1, 2, 4, 5, 6});
  }
}

TEST_CASE("sampling: the same seed and counter give the same token, other seeds differ", "[sampling]") {
  const auto logits = dsv4::test::random_normal(64, 81, 0.5f);
  const sampling_params p{.temperature = 1.0f, .top_p = 0.95f, .seed = 1234};
  sample_ws a(logits.size()), b(logits.size());
  std::vector<std::int32_t> first;
  for (std::uint64_t c = 0; c < 200; ++c) first.push_back(draw(logits, p, c, a));
  // Another workspace, counters visited in reverse: the same tokens.
  for (std::uint64_t c = 200; c-- > 0;) CHECK(draw(logits, p, c, b) == first[c]);
  for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{1235}}) {
    sampling_params other = p;
    other.seed = seed;
    int differ = 0;
    for (std::uint64_t c = 0; c < 200; ++c) differ += draw(logits, other, c, a) != first[c];
    CHECK(differ > 50);
  }
}

TEST_CASE("sampling: bad parameters name the field and write nothing", "[sampling]") {
  const auto logits = dsv4::test::random_normal(16, 91);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  CHECK(dsv4::model::check_sampling({}, 16).ok());
  CHECK(
      dsv4::model::check_sampling({.temperature = 2.0f, .top_k = 16, .top_p = 1.0f, .min_p = 1.0f}, 16).ok());
  const struct {
    sampling_params p;
    std::string text;
  } cases[] = {
      {{.temperature = -0.5f}, "sampling_params.temperature = -0.5 is outside [0, inf)"},
      {{.temperature = nan}, "sampling_params.temperature = nan"},
      {{.temperature = inf}, "sampling_params.temperature = inf"},
      {{.top_k = -1}, "sampling_params.top_k = -1 is outside [0, 16]"},
      {{.top_k = 17}, "sampling_params.top_k = 17 is outside [0, 16]"},
      {{.top_p = 1.5f}, "sampling_params.top_p = 1.5 is outside (0, 1]"},
      {{.top_p = 0.0f}, "sampling_params.top_p = 0 is outside (0, 1]"},
      {{.top_p = nan}, "sampling_params.top_p = nan"},
      {{.min_p = -0.25f}, "sampling_params.min_p = -0.25 is outside [0, 1]"},
      {{.min_p = 1.25f}, "sampling_params.min_p = 1.25 is outside [0, 1]"},
  };
  for (const auto& bad : cases) {
    INFO(bad.text);
    for (const float t : {0.0f, 1.0f}) {
      sampling_params p = bad.p;
      if (p.temperature == 0.0f) p.temperature = t;
      sample_ws ws(logits.size());
      const auto r = sample(logits, p, 0, ws.w.bytes);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == dsv4::errc::invalid_argument);
      CHECK(names(r.error(), bad.text));
      CHECK(ws.untouched());
    }
  }
}

TEST_CASE("sampling: bad logits and workspaces name the culprit and write nothing", "[sampling]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const float t : {0.0f, 1.0f}) {  // greedy calls are checked alike
    INFO("temperature " << t);
    const sampling_params p{.temperature = t};
    const auto fails = [&](const std::vector<float>& logits, std::span<std::byte> bytes, dsv4::errc code,
                           const std::string& text) {
      const auto r = sample(logits, p, 3, bytes);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == code);
      CHECK(names(r.error(), text));
    };
    for (const float bad : {nan, inf}) {
      auto logits = dsv4::test::random_normal(32, 101);
      logits[17] = bad;
      sample_ws ws(logits.size());
      fails(logits, ws.w.bytes, dsv4::errc::invalid_argument,
            "logits[17] = " + std::string(bad == inf ? "inf" : "nan") + " is not finite");
      CHECK(ws.untouched());
    }
    {
      const std::vector<float> logits(9, neg_inf);
      sample_ws ws(logits.size());
      fails(logits, ws.w.bytes, dsv4::errc::invalid_argument, "all 9 logits are -inf");
      CHECK(ws.untouched());
    }
    {
      sample_ws ws(4);
      fails({}, ws.w.bytes, dsv4::errc::shape_mismatch, "logits: empty");
      CHECK(ws.untouched());
    }
    {
      const auto logits = dsv4::test::random_normal(32, 102);
      const std::size_t need = dsv4::model::sample_workspace_bytes(32);
      dsv4::test::aligned_workspace w(need + 64);
      std::fill(w.bytes.begin(), w.bytes.end(), std::byte{0x5a});
      fails(logits, w.bytes.first(need - 1), dsv4::errc::out_of_range, "workspace: expected at least");
      fails(logits, w.bytes.subspan(8, need), dsv4::errc::out_of_range, "aligned to 64");
      CHECK(std::all_of(w.bytes.begin(), w.bytes.end(), [](std::byte b) { return b == std::byte{0x5a}; }));
    }
  }
}

TEST_CASE("sampling: a draw allocates nothing", "[sampling]") {
  const auto logits = dsv4::test::random_normal(3000, 111);
  sample_ws ws(logits.size());
  const sampling_params p{.temperature = 0.8f, .top_k = 50, .top_p = 0.9f, .min_p = 0.05f, .seed = 2};
  const sampling_params full{.temperature = 1.2f, .top_p = 0.7f, .seed = 3};
  bool ok = true;
  const std::int64_t n = dsv4::test::allocations_during([&] {
    for (std::uint64_t c = 0; c < 10; ++c) {
      ok = ok && sample(logits, p, c, ws.w.bytes).ok();
      ok = ok && sample(logits, full, c, ws.w.bytes).ok();
      ok = ok && sample(logits, {}, c, ws.w.bytes).ok();
    }
  });
  CHECK(ok);
  CHECK(n == 0);
}

TEST_CASE("sampling: should_stop on a stop id or the token budget", "[sampling]") {
  const std::vector<std::int32_t> stops{2, 7};
  const dsv4::model::stop_condition c{stops, 5};
  CHECK(dsv4::model::should_stop(c, 7, 1));
  CHECK(dsv4::model::should_stop(c, 2, 3));
  CHECK_FALSE(dsv4::model::should_stop(c, 3, 4));
  CHECK(dsv4::model::should_stop(c, 3, 5));
  CHECK_FALSE(dsv4::model::should_stop({{}, 2}, 0, 1));
  CHECK(dsv4::model::should_stop({{}, 2}, 0, 2));
}
