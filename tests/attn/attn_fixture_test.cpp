// The attention layer against golden outputs of the Hugging Face transformers DeepseekV4Attention
// module (tests/reference/make_attn_fixtures.py): one prefill per layer kind on a tiny config with
// random weights, fp32. Tolerance 1e-4 relative L2: both sides are fp32 with different summation
// orders and exp/cos implementations, which leaves errors near 1e-6; a wrong channel half, RoPE
// pairing, sink or mask moves the result by far more than 1e-4.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"
#include "fixture.hpp"

namespace {
using namespace dsv4;

// The config of the fixtures (make_config() in the script): layer 0 SWA, 1 CSA, 2 HCA.
constexpr config::model_config fixture_config = [] {
  config::model_config c = config::tiny_hybrid;
  c.d_model = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.head_dim = 16;
  c.rope_dim = 8;
  c.nope_dim = 8;
  c.q_lora_rank = 16;
  c.o_groups = 2;
  c.o_lora_rank = 8;
  c.window = 8;
  c.csa_ratio = 4;
  c.hca_ratio = 16;
  const auto schedule = config::compress_schedule{}.append({0, 4, 16}).append({0});
  c.compress_ratios = schedule.ratios;
  c.n_schedule = schedule.size;
  c.index_n_heads = 4;
  c.index_head_dim = 8;
  c.index_topk = 3;
  return c;
}();

// A fixture's tensors, kept alive for the views the layer reads.
struct fixture_weights {
  std::map<std::string, test::fixture_tensor> t;

  explicit fixture_weights(const test::fixture& f, const std::vector<std::string>& names) {
    for (const auto& n : names) t[n] = f.tensor(n);
  }
  tensor_view<const float, 2> v2(const std::string& n) const {
    const auto& x = t.at(n);
    return {x.data.data(), {x.shape.at(0), x.shape.at(1)}};
  }
  tensor_view<const float, 1> v1(const std::string& n) const {
    const auto& x = t.at(n);
    return {x.data.data(), {x.shape.at(0)}};
  }
  attn::compressor_weights<> compressor(const std::string& p) const {
    return {{v2(p + ".wkv.weight")}, {v2(p + ".wgate.weight")}, v2(p + ".ape"), v1(p + ".norm.weight")};
  }
};

template <class P>
void check_fixture(const std::string& file) {
  const auto f = test::fixture::load(file);
  std::vector<std::string> names = {"x",
                                    "y",
                                    "rope.inv_freq",
                                    "attn.wq_a.weight",
                                    "attn.q_norm.weight",
                                    "attn.wq_b.weight",
                                    "attn.wkv.weight",
                                    "attn.kv_norm.weight",
                                    "attn.wo_a.weight",
                                    "attn.wo_b.weight",
                                    "attn.attn_sink"};
  constexpr bool compressed = P::compress_ratio(attn::shape_of<fixture_config>) > 0,
                 indexed = P::top_k(attn::shape_of<fixture_config>) > 0;
  for (const char* s : {".wkv.weight", ".wgate.weight", ".ape", ".norm.weight"}) {
    if (compressed) names.push_back(std::string("attn.compressor") + s);
    if (indexed) names.push_back(std::string("attn.indexer.compressor") + s);
  }
  if (indexed) names.insert(names.end(), {"attn.indexer.wq_b.weight", "attn.indexer.weights_proj.weight"});
  const fixture_weights fw(f, names);

  attn::attention_weights<> w{{fw.v2("attn.wq_a.weight")},
                              fw.v1("attn.q_norm.weight"),
                              {fw.v2("attn.wq_b.weight")},
                              {fw.v2("attn.wkv.weight")},
                              fw.v1("attn.kv_norm.weight"),
                              {fw.v2("attn.wo_a.weight")},
                              {fw.v2("attn.wo_b.weight")},
                              fw.v1("attn.attn_sink"),
                              {},
                              {}};
  if (compressed) w.compressor = fw.compressor("attn.compressor");
  if (indexed)
    w.indexer = {{fw.v2("attn.indexer.wq_b.weight")},
                 {fw.v2("attn.indexer.weights_proj.weight")},
                 fw.compressor("attn.indexer.compressor")};
  const auto layer = attn::attention_layer<fixture_config, P>::create(w, config::tiny_params);
  REQUIRE(layer.ok());

  // The RoPE table (plain or YaRN) agrees with HF's inverse frequencies to float rounding.
  const auto& ref_freq = fw.t.at("rope.inv_freq").data;
  const auto freq = layer->rope().inv_freq();
  CHECK(test::rel_l2({freq.data(), freq.size()}, ref_freq) <= 1e-6);

  const auto& x = fw.t.at("x");
  const index_t S = x.shape[0], d = x.shape[1];
  auto cache = attn::attention_layer<fixture_config, P>::make_cache(1, S);
  REQUIRE(cache.ok());
  const auto seq = cache->open();
  REQUIRE(seq.ok());
  std::vector<float> y(std::size_t(S * d));
  REQUIRE(layer->forward(*cache, 0, *seq, {x.data.data(), {S, d}}, {y.data(), {S, d}}).ok());
  const double err = test::rel_l2(y, fw.t.at("y").data);
  INFO(file << ": rel L2 " << err);
  CHECK(err <= 1e-4);
}
}  // namespace

TEST_CASE("SWA layer matches Hugging Face DeepseekV4Attention", "[attn][fixture]") {
  check_fixture<attn::swa>("attn_swa.json");
}

TEST_CASE("CSA layer matches Hugging Face DeepseekV4Attention", "[attn][fixture]") {
  check_fixture<attn::csa>("attn_csa.json");
}

TEST_CASE("HCA layer matches Hugging Face DeepseekV4Attention", "[attn][fixture]") {
  check_fixture<attn::hca>("attn_hca.json");
}
