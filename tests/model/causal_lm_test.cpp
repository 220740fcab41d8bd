// The whole model against Hugging Face transformers on the committed tiny checkpoint
// (tests/fixtures/tiny_v4, fixture tiny_v4_model.json from tests/reference/make_tiny_model_fixtures.py):
// prefill logits of every position, decode steps after a cached prefill, greedy decoding; then the
// properties that need no reference: batching, threads, bad input.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "allocations.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/model/causal_lm.hpp"
#include "fixture.hpp"

using namespace dsv4;

namespace {

constexpr config::model_config C = config::tiny_v4;
using lm = model::causal_lm<C>;
constexpr index_t vocab = C.vocab_size;

const io::loaded_model<C>& tiny() {
  static auto m = io::load_model<C>(std::string(DSV4_FIXTURE_DIR) + "/tiny_v4");
  REQUIRE(m.ok());
  return *m;
}

lm make_model() {
  auto m = lm::create(tiny().weights(), tiny().params());
  REQUIRE(m.ok());
  return std::move(*m);
}

std::vector<std::int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<std::int32_t>>(); }

// Runs one forward and returns its logits (rows of the batch, vocab).
std::vector<float> run(const lm& m, lm::cache_type& cache, std::span<const model::sequence_input> batch) {
  const index_t rows = lm::logits_rows_of(batch);
  std::vector<float> logits(static_cast<std::size_t>(rows * vocab));
  const status s = m.forward(cache, batch, tensor_view<float, 2>(logits.data(), {rows, vocab}));
  INFO(s.message());
  REQUIRE(s.ok());
  return logits;
}

std::vector<float> rows(const test::fixture_tensor& t, index_t first, index_t count) {
  return {t.data.begin() + first * vocab, t.data.begin() + (first + count) * vocab};
}

std::int32_t argmax(std::span<const float> row) {
  return static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

}  // namespace

TEST_CASE("tiny_v4: prefill logits of every position equal transformers' within 1e-4", "[model]") {
  const auto f = test::fixture::load("tiny_v4_model.json");
  const auto prompt = ids_of(f.meta().at("prompt"));
  const lm m = make_model();
  auto cache = lm::make_cache(1, 256);
  REQUIRE(cache.ok());
  const auto seq = cache->open();
  REQUIRE(seq.ok());
  const model::sequence_input in{*seq, prompt, model::logits_rows::all};
  const auto logits = run(m, *cache, {&in, 1});
  const auto ref = f.tensor("prefill_logits");
  // Per position too: a wrong window, compressor or indexer shows first in the rows that use it.
  double worst = 0;
  for (index_t p = 0; p < static_cast<index_t>(prompt.size()); ++p) {
    const std::vector<float> got(logits.begin() + p * vocab, logits.begin() + (p + 1) * vocab);
    worst = std::max(worst, test::rel_l2(got, rows(ref, p, 1)));
  }
  INFO("worst row " << worst);
  CHECK(test::rel_l2(logits, ref.data) < 1e-4);
  CHECK(worst < 1e-4);
}

TEST_CASE("tiny_v4: decode steps after a cached prefill equal transformers' cached decode", "[model]") {
  const auto f = test::fixture::load("tiny_v4_model.json");
  const auto prompt = ids_of(f.meta().at("prompt"));
  const auto from = f.meta().at("decode_from").get<index_t>();
  const auto ref = f.tensor("decode_logits");
  const lm m = make_model();
  auto cache = lm::make_cache(1, 256);
  REQUIRE(cache.ok());
  const auto seq = *cache->open();
  const model::sequence_input head{seq, std::span(prompt).first(static_cast<std::size_t>(from)),
                                   model::logits_rows::none};
  run(m, *cache, {&head, 1});
  std::vector<float> got;
  for (index_t p = from; p < static_cast<index_t>(prompt.size()); ++p) {
    const model::sequence_input step{seq, std::span(prompt).subspan(static_cast<std::size_t>(p), 1)};
    const auto l = run(m, *cache, {&step, 1});
    got.insert(got.end(), l.begin(), l.end());
  }
  CHECK(test::rel_l2(got, ref.data) < 1e-4);
  // Decode equals prefill: the fixture's prefill rows of the same positions.
  CHECK(test::rel_l2(got, rows(f.tensor("prefill_logits"), from, ref.shape[0])) < 1e-4);
}

TEST_CASE("tiny_v4: greedy decoding of 32 tokens gives transformers' generate tokens", "[model]") {
  const auto f = test::fixture::load("tiny_v4_model.json");
  const auto prompt = ids_of(f.meta().at("prompt"));
  const auto n = f.meta().at("greedy_prompt_len").get<std::size_t>();
  const auto want = ids_of(f.meta().at("greedy"));
  const lm m = make_model();
  auto cache = lm::make_cache(1, 128);
  REQUIRE(cache.ok());
  const auto seq = *cache->open();
  std::vector<std::int32_t> got;
  model::sequence_input in{seq, std::span(prompt).first(n)};
  std::int32_t next = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    next = argmax(run(m, *cache, {&in, 1}));
    got.push_back(next);
    in.tokens = std::span<const std::int32_t>(&next, 1);
  }
  CHECK(got == want);
}

TEST_CASE("tiny_v4: a sequence's logits are bit-identical alone or batched with others at other positions",
          "[model]") {
  const auto f = test::fixture::load("tiny_v4_model.json");
  const auto a = ids_of(f.meta().at("prompt"));
  const auto b = ids_of(f.meta().at("prompt_b"));
  const lm m = make_model();
  const auto alone = [&](std::span<const std::int32_t> first, std::span<const std::int32_t> then) {
    auto cache = lm::make_cache(1, 256);
    REQUIRE(cache.ok());
    const auto seq = *cache->open();
    const model::sequence_input p{seq, first, model::logits_rows::all};
    auto l = run(m, *cache, {&p, 1});
    const model::sequence_input q{seq, then, model::logits_rows::all};
    const auto l2 = run(m, *cache, {&q, 1});
    l.insert(l.end(), l2.begin(), l2.end());
    return l;
  };
  // Sequence A: 130 tokens then 3; sequence B: 5 tokens then 18. The second call batches A's
  // decode-like continuation with B's prefill chunk, in both orders of the first call.
  const auto sa = std::span(a).first(133), sb = std::span(b);
  const auto ref_a = alone(sa.first(130), sa.subspan(130));
  const auto ref_b = alone(sb.first(5), sb.subspan(5));
  CHECK(test::rel_l2(std::vector<float>(ref_b.begin(), ref_b.end()), f.tensor("prefill_logits_b").data) <
        1e-4);

  auto cache = lm::make_cache(3, 256);
  REQUIRE(cache.ok());
  const auto x = *cache->open(), y = *cache->open();
  const model::sequence_input first[] = {{y, sb.first(5), model::logits_rows::all},
                                         {x, sa.first(130), model::logits_rows::all}};
  const auto l1 = run(m, *cache, first);
  const model::sequence_input second[] = {{x, sa.subspan(130), model::logits_rows::all},
                                          {y, sb.subspan(5), model::logits_rows::all}};
  const auto l2 = run(m, *cache, second);
  std::vector<float> got_a(l1.begin() + 5 * vocab, l1.end()), got_b(l1.begin(), l1.begin() + 5 * vocab);
  got_a.insert(got_a.end(), l2.begin(), l2.begin() + 3 * vocab);
  got_b.insert(got_b.end(), l2.begin() + 3 * vocab, l2.end());
  CHECK(std::memcmp(got_a.data(), ref_a.data(), ref_a.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(got_b.data(), ref_b.data(), ref_b.size() * sizeof(float)) == 0);
}

TEST_CASE("tiny_v4: 1 and 2 threads give bit-identical logits", "[model]") {
  const auto f = test::fixture::load("tiny_v4_model.json");
  const auto prompt = ids_of(f.meta().at("prompt"));
  const lm m = make_model();
  const auto logits = [&] {
    auto cache = lm::make_cache(1, 256);
    REQUIRE(cache.ok());
    const model::sequence_input in{*cache->open(), prompt, model::logits_rows::all};
    return run(m, *cache, {&in, 1});
  };
  const int threads = max_threads();
  set_num_threads(1);
  const auto one = logits();
  set_num_threads(2);
  const auto two = logits();
  set_num_threads(threads);
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}

TEST_CASE("bad input to forward is a status naming the problem, and the cache stays as it was", "[model]") {
  const lm m = make_model();
  auto made = lm::make_cache(2, 32);
  REQUIRE(made.ok());
  lm::cache_type& cache = *made;
  const auto seq = *cache.open(), other = *cache.open();
  const std::vector<std::int32_t> ok_ids{3, 4, 5};
  const model::sequence_input warm{seq, ok_ids, model::logits_rows::none};
  run(m, cache, {&warm, 1});
  std::vector<float> logits(4 * vocab);
  const auto expect_refused = [&](std::span<const model::sequence_input> batch, index_t rows,
                                  const std::string& words) {
    const std::size_t free_pages = static_cast<std::size_t>(cache.free_pages());
    const status s = m.forward(cache, batch, tensor_view<float, 2>(logits.data(), {rows, vocab}));
    INFO(s.message());
    CHECK(!s.ok());
    CHECK(s.message().find(words) != std::string::npos);
    for (int l = 0; l < C.n_layers; ++l) CHECK(*cache.tokens(seq, l) == 3);
    CHECK(static_cast<std::size_t>(cache.free_pages()) == free_pages);
  };
  const std::vector<std::int32_t> outside{3, 128}, negative{-1}, long_ids(30, 7);
  const model::sequence_input bad_token[] = {{seq, outside}};
  expect_refused(bad_token, 1, "outside the vocabulary");
  const model::sequence_input bad_negative[] = {{seq, negative}};
  expect_refused(bad_negative, 1, "outside the vocabulary");
  const model::sequence_input twice[] = {{seq, ok_ids}, {seq, ok_ids}};
  expect_refused(twice, 2, "appears twice");
  const model::sequence_input too_long[] = {{seq, long_ids}};
  expect_refused(too_long, 1, "capacity");
  const model::sequence_input empty[] = {{seq, {}}};
  expect_refused(empty, 1, "no tokens");
  const model::sequence_input wrong_rows[] = {{seq, ok_ids, model::logits_rows::all}};
  expect_refused(wrong_rows, 2, "logits");
  const model::sequence_input stale[] = {{other, ok_ids}, {attn::sequence_id{12345}, ok_ids}};
  expect_refused(stale, 2, "unknown sequence");
  // A workspace one byte short.
  const std::vector<std::int32_t> one{9};
  const model::sequence_input step{seq, one};
  const std::size_t need = m.workspace_bytes(1, cache.capacity());
  std::vector<std::byte> raw(need + 64);
  auto* base = reinterpret_cast<std::byte*>((reinterpret_cast<std::uintptr_t>(raw.data()) + 63) / 64 * 64);
  const status s = m.forward(cache, {&step, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}),
                             std::span<std::byte>(base, need - 1));
  CHECK(s.code() == errc::out_of_range);
  CHECK(*cache.tokens(seq, 0) == 3);
  // The same call with the whole workspace succeeds.
  CHECK(m.forward(cache, {&step, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}),
                  std::span<std::byte>(base, need))
            .ok());
}

TEST_CASE(
    "a decode step with the engine's workspace allocates nothing, on the model's team or the caller's pool",
    "[model]") {
  const lm m = make_model();
  auto cache = lm::make_cache(2, 64);
  REQUIRE(cache.ok());
  const auto seq = *cache->open();
  const std::vector<std::int32_t> prompt{5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  const model::sequence_input first{seq, prompt, model::logits_rows::none};
  run(m, *cache, {&first, 1});
  const std::size_t need = m.workspace_bytes(1, cache->capacity());
  std::vector<std::byte> raw(need + 64);
  const std::span<std::byte> ws(
      reinterpret_cast<std::byte*>((reinterpret_cast<std::uintptr_t>(raw.data()) + 63) / 64 * 64), need);
  std::vector<float> logits(vocab);
  std::int32_t token = 3;
  const auto step = [&] {
    const model::sequence_input in{seq, std::span<const std::int32_t>(&token, 1)};
    return m.forward(*cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}), ws);
  };
  const int threads = max_threads();
  set_num_threads(2);
  REQUIRE(step().ok());  // makes the model's team
  status s;
  CHECK(test::allocations_during([&] { s = step(); }) == 0);
  CHECK(s.ok());
  spin_pool pool(2);
  const executor_scope scope(pool);
  CHECK(test::allocations_during([&] { s = step(); }) == 0);
  CHECK(s.ok());
  set_num_threads(threads);
}
