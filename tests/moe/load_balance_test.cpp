// Load statistics, the auxiliary-loss-free bias update (sign rule) and the sequence-wise balance
// loss on hand-computed cases.
#include <catch2/catch.hpp>

#include <vector>

#include "dsv4/moe/load_balance.hpp"

using dsv4::index_t;

TEST_CASE("load_balance: counts, summary and the sign-rule bias update") {
  const std::vector<std::int32_t> ids = {0, 2, 0, 3, 0, 2, 1, 0};  // 4 tokens, k = 2
  std::vector<std::int64_t> counts(4);
  REQUIRE(dsv4::moe::count_expert_load({ids.data(), {4, 2}}, {counts.data(), {4}}).ok());
  CHECK(counts == std::vector<std::int64_t>{4, 1, 2, 1});
  const auto s = dsv4::moe::summarize_load({counts.data(), {4}});
  REQUIRE(s.ok());
  CHECK(s->mean == 2.0);
  CHECK(s->max == 4);
  CHECK(s->min == 1);
  CHECK(s->max_violation == 1.0);

  std::vector<float> bias = {0.25f, -0.5f, 0.125f, 0.0f};
  REQUIRE(dsv4::moe::update_bias({bias.data(), {4}}, {counts.data(), {4}}).ok());
  CHECK(bias[0] == 0.25f - 0.001f);  // overloaded: down
  CHECK(bias[1] == -0.5f + 0.001f);  // underloaded: up
  CHECK(bias[2] == 0.125f);          // at the mean: unchanged
  CHECK(bias[3] == 0.001f);
}

TEST_CASE("load_balance: the sequence-wise balance loss") {
  // Uniform affinities and a perfectly balanced selection: f_e = 1 and P_e = 1/E, so L = alpha.
  const std::vector<float> uniform(4 * 4, 0.3f);
  const std::vector<std::int32_t> balanced = {0, 1, 2, 3, 0, 1, 2, 3};  // 4 tokens, k = 2
  auto l = dsv4::moe::sequence_balance_loss({uniform.data(), {4, 4}}, {balanced.data(), {4, 2}}, 0.5f);
  REQUIRE(l.ok());
  CHECK(*l == Approx(0.5f));

  // Two tokens, three experts, k = 1, both pick expert 0: f = (3, 0, 0);
  // P_0 = (1/2) * (2/4 + 1/2) = 0.5, so L = alpha * 3 * 0.5.
  const std::vector<float> scores = {2, 1, 1, 1, 0.5f, 0.5f};
  const std::vector<std::int32_t> skewed = {0, 0};
  l = dsv4::moe::sequence_balance_loss({scores.data(), {2, 3}}, {skewed.data(), {2, 1}}, 0.1f);
  REQUIRE(l.ok());
  CHECK(*l == Approx(0.15f));
}
