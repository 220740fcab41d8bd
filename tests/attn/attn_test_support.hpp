// Random attention weights and inputs for the attn tests: owned buffers and the views the layer reads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attn/attention.hpp"
#include "dsv4/config/presets.hpp"

namespace dsv4::test {

// Named fp32 tensors owned by the test; views into them stay valid while the object lives.
class tensor_store {
 public:
  std::vector<float>& add(const std::string& name, std::vector<index_t> shape, std::vector<float> data) {
    shapes_[name] = std::move(shape);
    return data_[name] = std::move(data);
  }
  tensor_view<const float, 2> view2(const std::string& name) const {
    const auto& s = shapes_.at(name);
    return {data_.at(name).data(), {s.at(0), s.at(1)}};
  }
  tensor_view<const float, 1> view1(const std::string& name) const {
    return {data_.at(name).data(), {shapes_.at(name).at(0)}};
  }
  std::vector<float>& data(const std::string& name) { return data_.at(name); }

 private:
  std::map<std::string, std::vector<index_t>> shapes_;
  std::map<std::string, std::vector<float>> data_;
};

inline std::vector<float> normal(std::size_t n, float mean, float stddev, std::mt19937& rng) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Weights of every branch for config C at checkpoint names; linears scaled by 1/sqrt(in) so that
// activations stay of order one.
template <config::model_config C>
tensor_store random_attention_store(unsigned seed) {
  std::mt19937 rng(seed);
  tensor_store s;
  const auto linear = [&](const std::string& name, index_t out, index_t in) {
    s.add(name, {out, in}, normal(std::size_t(out * in), 0.0f, 1.0f / std::sqrt(float(in)), rng));
  };
  const auto gain = [&](const std::string& name, index_t n) {
    s.add(name, {n}, normal(std::size_t(n), 1.0f, 0.2f, rng));
  };
  const index_t d = C.d_model, c = C.head_dim, h = C.n_heads, ci = C.index_head_dim;
  linear("wq_a", C.q_lora_rank, d);
  gain("q_norm", C.q_lora_rank);
  linear("wq_b", h * c, C.q_lora_rank);
  linear("wkv", c, d);
  gain("kv_norm", c);
  linear("wo_a", index_t{C.o_groups} * C.o_lora_rank, h * c / C.o_groups);
  linear("wo_b", d, index_t{C.o_groups} * C.o_lora_rank);
  s.add("attn_sink", {h}, normal(std::size_t(h), 0.0f, 1.0f, rng));
  // Compressors for both ratios share names by prefix; the layer reads the one its policy needs.
  for (int ratio : {C.csa_ratio, C.hca_ratio}) {
    const index_t coff = ratio == C.csa_ratio ? 2 : 1;
    const std::string p = "compressor" + std::to_string(ratio);
    linear(p + ".wkv", coff * c, d);
    linear(p + ".wgate", coff * c, d);
    s.add(p + ".ape", {ratio, coff * c}, normal(std::size_t(ratio * coff * c), 0.0f, 1.0f, rng));
    gain(p + ".norm", c);
  }
  linear("indexer.wq_b", index_t{C.index_n_heads} * ci, C.q_lora_rank);
  linear("indexer.weights_proj", C.index_n_heads, d);
  linear("indexer.compressor.wkv", 2 * ci, d);
  linear("indexer.compressor.wgate", 2 * ci, d);
  s.add("indexer.compressor.ape", {C.csa_ratio, 2 * ci},
        normal(std::size_t(C.csa_ratio * 2 * ci), 0.0f, 1.0f, rng));
  gain("indexer.compressor.norm", ci);
  return s;
}

inline attn::compressor_weights<> compressor_views(const tensor_store& s, const std::string& p) {
  return {{s.view2(p + ".wkv")}, {s.view2(p + ".wgate")}, s.view2(p + ".ape"), s.view1(p + ".norm")};
}

// The views of layer kind `ratio` (0, csa_ratio or hca_ratio) over a store made above.
inline attn::attention_weights<> attention_views(const tensor_store& s, int ratio) {
  attn::attention_weights<> w{{s.view2("wq_a")},
                              s.view1("q_norm"),
                              {s.view2("wq_b")},
                              {s.view2("wkv")},
                              s.view1("kv_norm"),
                              {s.view2("wo_a")},
                              {s.view2("wo_b")},
                              s.view1("attn_sink"),
                              {},
                              {}};
  if (ratio > 0) w.compressor = compressor_views(s, "compressor" + std::to_string(ratio));
  w.indexer = {{s.view2("indexer.wq_b")},
               {s.view2("indexer.weights_proj")},
               compressor_views(s, "indexer.compressor")};
  return w;
}

// A layer of policy P and numerics Num over random weights it owns.
template <config::model_config C, class P, numerics Num = numerics::exact>
struct random_layer {
  tensor_store store;
  attn::attention_layer<C, P, Num> layer;
  explicit random_layer(unsigned seed)
      : store(random_attention_store<C>(seed)),
        layer(*attn::attention_layer<C, P, Num>::create(
            attention_views(store, P::compress_ratio(attn::shape_of<C>)), config::tiny_params)) {}
};

// The share of the top k of scores `a` that the top k of scores `b` also selects (n >= k).
inline double top_k_agreement(std::span<const float> a, std::span<const float> b, index_t k) {
  std::vector<std::int32_t> sa(a.size()), sb(b.size());
  attn::select_top_k(a, k, sa);
  attn::select_top_k(b, k, sb);
  std::vector<std::int32_t> both;
  std::set_intersection(sa.begin(), sa.begin() + k, sb.begin(), sb.begin() + k, std::back_inserter(both));
  return double(both.size()) / double(k);
}

}  // namespace dsv4::test
