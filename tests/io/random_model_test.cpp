// Random models: the same seed gives the same file, any thread count; the model loads through the
// checkpoint path in every storage and runs.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/io/random_model.hpp"
#include "dsv4/model/causal_lm.hpp"

using namespace dsv4;

TEST_CASE("random_safetensors: a seed gives one file whatever the threads, another seed another file",
          "[io][random]") {
  const io::model_shape s = io::shape_of(config::tiny_v4_released);
  const int threads = max_threads();
  set_num_threads(1);
  auto a = io::random_safetensors(s, true, 5);
  set_num_threads(2);
  auto b = io::random_safetensors(s, true, 5);
  set_num_threads(threads);
  auto c = io::random_safetensors(s, true, 6);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(c.ok());
  CHECK(*a == *b);
  CHECK(*a != *c);
  CHECK(a->size() == c->size());
}

TEMPLATE_TEST_CASE_SIG("random_model: loads in its storage, with its MTP block, and gives finite logits",
                       "[io][random]", ((config::model_config C, numerics Num), C, Num),
                       (config::tiny_v4, numerics::exact), (config::tiny_v4_released, numerics::released)) {
  auto loaded = io::random_model<C>(1, config::tiny_params);
  INFO((loaded.ok() ? std::string() : loaded.error().message()));
  REQUIRE(loaded.ok());
  CHECK(loaded->weights().mtp.size() == 1);
  using lm = model::causal_lm<C, model::default_policies<C, Num>>;
  auto m = lm::create(loaded->weights(), loaded->params());
  INFO((m.ok() ? std::string() : m.error().message()));
  REQUIRE(m.ok());
  auto cache = lm::make_cache(1, 64);
  REQUIRE(cache.ok());
  const std::vector<std::int32_t> prompt{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  const model::sequence_input in{*cache->open(), prompt, model::logits_rows::all};
  std::vector<float> logits(prompt.size() * C.vocab_size);
  REQUIRE(
      m->forward(*cache, {&in, 1},
                 tensor_view<float, 2>(logits.data(), {static_cast<index_t>(prompt.size()), C.vocab_size}))
          .ok());
  float spread = 0;
  for (const float v : logits) {
    REQUIRE(std::isfinite(v));
    spread = std::max(spread, std::fabs(v - logits[0]));
  }
  CHECK(spread > 0.1f);  // not a degenerate model
}
