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

namespace {

// A checkpoint from `bytes` with every E8M0 block scale stored as F32 `X.weight_scale_inv`
// (transformers' fine-grained FP8 with scale_fmt "float"); `bump` multiplies the first value of
// that one tensor (a scale that is no power of two).
result<io::checkpoint> with_f32_scale_inv(const std::vector<std::byte>& bytes, std::vector<std::byte>& out,
                                          const std::string& bump = "") {
  auto f = io::safetensors_file::from_bytes(bytes, "random");
  if (!f) return f.error();
  io::safetensors_writer w;
  for (const auto& t : f->tensors()) {
    if (!t.name.ends_with(".scale") || t.type != io::dtype::f8_e8m0) {
      DSV4_TRY(w.add(t.name, t.type, t.shape, f->bytes(t)));
      continue;
    }
    const auto raw = f->bytes(t);
    std::vector<float> v(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i)
      v[i] = ue8m0::from_bits(static_cast<std::uint8_t>(raw[i])).to_float();
    const std::string name = t.name.substr(0, t.name.size() - 6) + ".weight_scale_inv";
    if (name == bump) v[0] *= 3.0f;
    DSV4_TRY(w.add<float>(name, t.shape, v));
  }
  out = w.serialize();
  auto g = io::safetensors_file::from_bytes(out, "f32_scales/model.safetensors");
  if (!g) return g.error();
  std::vector<io::safetensors_file> shards;
  shards.push_back(std::move(*g));
  return io::checkpoint::from_files(std::move(shards), "f32_scales");
}

}  // namespace

TEST_CASE("load_model: F32 weight_scale_inv block scales bind as E8M0, or are refused by name") {
  constexpr config::model_config C = config::tiny_v4_released;
  auto bytes = io::random_safetensors(io::shape_of(C), true, 4);
  REQUIRE(bytes.ok());
  std::vector<std::byte> converted;
  auto ckpt = with_f32_scale_inv(*bytes, converted);
  REQUIRE(ckpt.ok());
  auto a = io::loaded_model<C>::bind(std::move(*ckpt), config::tiny_params);
  INFO((a.ok() ? std::string() : a.error().message()));
  REQUIRE(a.ok());
  auto g = io::safetensors_file::from_bytes(*bytes, "random");
  REQUIRE(g.ok());
  std::vector<io::safetensors_file> shards;
  shards.push_back(std::move(*g));
  auto ref_ckpt = io::checkpoint::from_files(std::move(shards), "random");
  REQUIRE(ref_ckpt.ok());
  auto b = io::loaded_model<C>::bind(std::move(*ref_ckpt), config::tiny_params);
  REQUIRE(b.ok());
  CHECK(a->copied_bytes() > b->copied_bytes());  // the scales were converted once
  const auto& sa = a->weights().layers[0].attn.wq_a.scale;
  const auto& sb = b->weights().layers[0].attn.wq_a.scale;
  REQUIRE(sa.extent(0) == sb.extent(0));
  REQUIRE(sa.extent(1) == sb.extent(1));
  for (index_t r = 0; r < sa.extent(0); ++r)
    for (index_t c = 0; c < sa.extent(1); ++c) CHECK(sa(r, c).bits == sb(r, c).bits);
  std::vector<std::byte> bad_bytes;
  auto bad = with_f32_scale_inv(*bytes, bad_bytes, "layers.1.attn.wo_b.weight_scale_inv");
  REQUIRE(bad.ok());
  auto refused = io::loaded_model<C>::bind(std::move(*bad), config::tiny_params);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.error().message(), Catch::Matchers::Contains("layers.1.attn.wo_b.weight_scale_inv") &&
                                            Catch::Matchers::Contains("not a power of two"));
}
