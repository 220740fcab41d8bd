// One DeepSeek-V4 attention layer on the CPU, exact path (fp32 weights and cache): the query and
// KV paths, the policy's long-range branch, the sparse attention core, output de-rotation and
// the grouped low-rank output projection (spec §4–§7, condensed in §14).
//
//   qr = q_norm(wq_a x)      q = RoPE_t(headRMS(wq_b qr))                     (n_h, c)
//   kv = RoPE_t(kv_norm(wkv x)) -> window ring slot t mod window              (c)
//   compressor (ratio > 0): an entry each time a block closes                 (c)
//   candidates = window rows (t-window+1 .. t) + visible compressed entries, all of them (HCA) or
//                the Lightning Indexer's top k (CSA)
//   o = sparse_attention(q, candidates, sink, 1/sqrt(c))  then RoPE_{-t} on each head's rope dims
//   y = wo_b concat_j(wo_a^(j) o_j)      over g groups of n_h/g consecutive heads
//
// attention_layer<C, P> holds views of the weights and the layer's RoPE table; sequence_cache<C, P>
// holds everything one sequence needs between calls (window ring, compressed entries, compressor
// tails, index keys) plus the per-token scratch, all allocated once for a fixed capacity. A call
// continues the sequence from the position the cache has reached, so one call covers a prefill
// from position 0, a chunk of a longer prefill and a single-token decode. Tokens are processed in
// order with the same arithmetic whatever the call's length: decoding token by token, prefilling
// in chunks and prefilling at once give identical outputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/concepts.hpp"
#include "dsv4/attn/indexer.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/attn/sparse_attention.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// Views of one layer's attention parameters (checkpoint names attn.*). The compressor is read
// only by compressing policies and the indexer only by top-k policies.
struct attention_weights {
  tensor_view<const float, 2> wq_a;       // (d_c, d)
  tensor_view<const float, 1> q_norm;     // (d_c)
  tensor_view<const float, 2> wq_b;       // (n_h * c, d_c)
  tensor_view<const float, 2> wkv;        // (c, d)
  tensor_view<const float, 1> kv_norm;    // (c)
  tensor_view<const float, 2> wo_a;       // (g * d_g, n_h * c / g)
  tensor_view<const float, 2> wo_b;       // (d, g * d_g)
  tensor_view<const float, 1> attn_sink;  // (n_h)
  compressor_weights compressor;
  indexer_weights indexer;
};

// Shapes of the layer P makes of config C.
template <config::model_config C, attention_policy P>
struct layer_shape {
  static_assert(config::is_valid_config<C>);
  static constexpr index_t d = C.d_model, d_c = C.q_lora_rank, heads = C.n_heads, c = C.head_dim;
  static constexpr index_t groups = C.o_groups, d_g = C.o_lora_rank;
  static constexpr int ratio = P::compress_ratio(C);
  static constexpr int top_k = P::top_k(C);
  static_assert(ratio >= 0, "dsv4 attention_policy: compress_ratio must be >= 0");
  static_assert(top_k >= 0, "dsv4 attention_policy: top_k must be >= 0");
  static_assert(top_k == 0 || ratio > 0, "dsv4 attention_policy: top_k > 0 needs a compressor (ratio > 0)");
  static_assert(top_k == 0 || (C.index_n_heads > 0 && C.index_head_dim >= C.rope_dim),
                "dsv4 attention_policy: an indexer needs index_n_heads > 0 and index_head_dim >= rope_dim");
  static constexpr compressor_shape compressor{ratio, C.head_dim, P::overlapping(C)};
  static constexpr indexer_shape indexer{C.index_n_heads, C.index_head_dim, top_k,
                                         compressor_shape{ratio, C.index_head_dim, P::overlapping(C)}};
};

template <config::model_config C, attention_policy P>
class attention_layer;

// The state of one sequence in one layer, for at most `capacity` tokens.
template <config::model_config C, attention_policy P>
class sequence_cache {
  using shape = layer_shape<C, P>;

 public:
  explicit sequence_cache(index_t capacity)
      : capacity_(capacity),
        window_(P::window(C, capacity)),
        max_entries_(shape::ratio > 0 ? capacity / shape::ratio : 0),
        kv_(static_cast<std::size_t>((window_ + max_entries_) * shape::c)),
        keys_(static_cast<std::size_t>(shape::top_k > 0 ? max_entries_ * C.index_head_dim : 0)),
        compressor_(shape::ratio > 0 ? compressor_state(shape::compressor) : compressor_state()),
        key_compressor_(shape::top_k > 0 ? compressor_state(shape::indexer.keys) : compressor_state()),
        qr_(shape::d_c),
        q_(static_cast<std::size_t>(shape::heads * shape::c)),
        o_(q_.size()),
        u_(static_cast<std::size_t>(shape::groups * shape::d_g)),
        entry_(shape::c),
        key_(static_cast<std::size_t>(C.index_head_dim)),
        index_q_(static_cast<std::size_t>(shape::indexer.q_width())),
        index_w_(static_cast<std::size_t>(C.index_n_heads)),
        scores_(static_cast<std::size_t>(max_entries_)),
        selected_(static_cast<std::size_t>(max_entries_)),
        candidates_(static_cast<std::size_t>(window_ + max_entries_)),
        attention_workspace_(static_cast<std::size_t>(
            sparse_attention_op::workspace_floats(shape::heads, shape::c, window_ + max_entries_))) {}

  void reset() {
    tokens_ = entries_ = 0;
    if (shape::ratio > 0) compressor_.reset();
    if (shape::top_k > 0) key_compressor_.reset();
  }

  index_t capacity() const { return capacity_; }
  index_t tokens() const { return tokens_; }    // position of the next token
  index_t entries() const { return entries_; }  // compressed entries written
  index_t window() const { return window_; }

  // Rows [0, window) hold the ring (token t at t mod window), rows window + i compressed entry i.
  tensor_view<const float, 2> kv_rows() const { return {kv_.data(), {window_ + max_entries_, shape::c}}; }
  // Index key i of the indexer, (max_entries, c_I).
  tensor_view<const float, 2> index_keys() const {
    return {keys_.data(), {shape::top_k > 0 ? max_entries_ : 0, C.index_head_dim}};
  }

 private:
  friend class attention_layer<C, P>;
  tensor_view<float, 2> kv_mut() { return {kv_.data(), {window_ + max_entries_, shape::c}}; }

  index_t capacity_, window_, max_entries_;
  index_t tokens_ = 0, entries_ = 0;
  std::vector<float> kv_;    // (window + max_entries, c)
  std::vector<float> keys_;  // (max_entries, c_I)
  compressor_state compressor_, key_compressor_;
  // Per-token scratch.
  std::vector<float> qr_;                 // (d_c)
  std::vector<float> q_;                  // (n_h, c)
  std::vector<float> o_;                  // (n_h, c)
  std::vector<float> u_;                  // (g * d_g)
  std::vector<float> entry_;              // (c)
  std::vector<float> key_;                // (c_I)
  std::vector<float> index_q_;            // (n_I, c_I)
  std::vector<float> index_w_;            // (n_I)
  std::vector<float> scores_;             // (max_entries)
  std::vector<std::int32_t> selected_;    // (max_entries)
  std::vector<std::int32_t> candidates_;  // (window + max_entries)
  std::vector<float> attention_workspace_;
};

template <config::model_config C, attention_policy P>
class attention_layer {
  using shape = layer_shape<C, P>;

 public:
  using cache_type = sequence_cache<C, P>;

  // Checks every weight the policy reads against the config before the layer can be used.
  static result<attention_layer> create(const attention_weights& w, const config::model_params& params) {
    DSV4_TRY(check_weights(w));
    return attention_layer(w, params);
  }

  // out[i] = attention output (d) of token x[i] (d) at position cache.tokens() + i; x and out are
  // (S, d). Fails, leaving the cache as it was, on a shape mismatch or when the sequence would
  // pass the cache's capacity.
  status forward(cache_type& cache, tensor_view<const float, 2> x, tensor_view<float, 2> out) const {
    DSV4_TRY(check_shape(x, {-1, shape::d}, "x"));
    DSV4_TRY(check_shape(out, {x.extent(0), shape::d}, "out"));
    DSV4_TRY(check_contiguous(x, "x"));
    DSV4_TRY(check_contiguous(out, "out"));
    if (cache.tokens() + x.extent(0) > cache.capacity())
      return {errc::out_of_range, "x: " + std::to_string(x.extent(0)) + " tokens from position " +
                                      std::to_string(cache.tokens()) + " pass the cache capacity " +
                                      std::to_string(cache.capacity())};
    for (index_t i = 0; i < x.extent(0); ++i) step(cache, row(x, i), row(out, i));
    return {};
  }

  const rope_table& rope() const { return rope_; }

 private:
  attention_layer(const attention_weights& w, const config::model_params& p)
      : w_(w), rope_(rope_table::for_layer(p, C.rope_dim, P::yarn_rope)), eps_(p.rms_norm_eps) {}

  static status check_weights(const attention_weights& w) {
    DSV4_TRY(check_shape(w.wq_a, {shape::d_c, shape::d}, "attn.wq_a.weight"));
    DSV4_TRY(check_shape(w.q_norm, {shape::d_c}, "attn.q_norm.weight"));
    DSV4_TRY(check_shape(w.wq_b, {shape::heads * shape::c, shape::d_c}, "attn.wq_b.weight"));
    DSV4_TRY(check_shape(w.wkv, {shape::c, shape::d}, "attn.wkv.weight"));
    DSV4_TRY(check_shape(w.kv_norm, {shape::c}, "attn.kv_norm.weight"));
    DSV4_TRY(check_shape(w.wo_a, {shape::groups * shape::d_g, shape::heads * shape::c / shape::groups},
                         "attn.wo_a.weight"));
    DSV4_TRY(check_shape(w.wo_b, {shape::d, shape::groups * shape::d_g}, "attn.wo_b.weight"));
    DSV4_TRY(check_shape(w.attn_sink, {shape::heads}, "attn.attn_sink"));
    DSV4_TRY(check_contiguous(w.wq_a, "attn.wq_a.weight"));
    DSV4_TRY(check_contiguous(w.q_norm, "attn.q_norm.weight"));
    DSV4_TRY(check_contiguous(w.wq_b, "attn.wq_b.weight"));
    DSV4_TRY(check_contiguous(w.wkv, "attn.wkv.weight"));
    DSV4_TRY(check_contiguous(w.kv_norm, "attn.kv_norm.weight"));
    DSV4_TRY(check_contiguous(w.wo_a, "attn.wo_a.weight"));
    DSV4_TRY(check_contiguous(w.wo_b, "attn.wo_b.weight"));
    if (shape::ratio > 0)
      DSV4_TRY(check_compressor(shape::compressor, w.compressor, shape::d, "attn.compressor"));
    if (shape::top_k > 0) DSV4_TRY(check_indexer(shape::indexer, w.indexer, shape::d, shape::d_c));
    return {};
  }

  template <class T>
  static std::span<T> row(tensor_view<T, 2> v, index_t i) {
    return {&v(i, 0), static_cast<std::size_t>(v.extent(1))};
  }

  void step(cache_type& s, std::span<const float> x, std::span<float> y) const {
    const index_t t = s.tokens_, c = shape::c;
    const tensor_view<float, 2> q(s.q_.data(), {shape::heads, c});
    const tensor_view<float, 2> o(s.o_.data(), {shape::heads, c});
    const tensor_view<float, 2> kv = s.kv_mut();

    // Query path: the latent qr is shared with the indexer.
    matvec(w_.wq_a, x, s.qr_);
    rms_norm(s.qr_, view_span(w_.q_norm), eps_, s.qr_);
    matvec(w_.wq_b, s.qr_, s.q_);
    for (index_t h = 0; h < shape::heads; ++h) rms_norm(row(q, h), {}, eps_, row(q, h));
    rope_.apply_rows(q, t);

    // KV path: one shared key = value latent into the window ring.
    const std::span<float> kv_t = row(kv, t % s.window_);
    matvec(w_.wkv, x, kv_t);
    rms_norm(kv_t, view_span(w_.kv_norm), eps_, kv_t);
    rope_.apply(kv_t, t);

    // Long-range branch: both compressors close their blocks on the same token.
    if constexpr (shape::ratio > 0) {
      if (s.compressor_.step(w_.compressor, rope_, eps_, x, s.entry_))
        std::copy(s.entry_.begin(), s.entry_.end(), row(kv, s.window_ + s.entries_).begin());
      if constexpr (shape::top_k > 0) {
        if (s.key_compressor_.step(w_.indexer.compressor, rope_, eps_, x, s.key_))
          std::copy(s.key_.begin(), s.key_.end(),
                    &s.keys_[static_cast<std::size_t>(s.entries_ * C.index_head_dim)]);
      }
      s.entries_ = s.compressor_.entries();
    }
    ++s.tokens_;

    index_t n = 0;
    for (index_t p = std::max<index_t>(0, t - s.window_ + 1); p <= t; ++p)
      s.candidates_[n++] = static_cast<std::int32_t>(p % s.window_);
    if constexpr (shape::ratio > 0) {
      const index_t visible = visible_entries(t, shape::ratio);
      if constexpr (shape::top_k > 0) {
        const tensor_view<float, 2> iq(s.index_q_.data(), {C.index_n_heads, C.index_head_dim});
        indexer_query(shape::indexer, w_.indexer, rope_, s.qr_, x, t, iq, s.index_w_);
        const std::span<float> scores(s.scores_.data(), static_cast<std::size_t>(visible));
        indexer_scores(iq, s.index_w_, s.index_keys().slice(0, visible), scores);
        const index_t k = select_top_k(scores, shape::top_k, s.selected_);
        for (index_t i = 0; i < k; ++i)
          s.candidates_[n++] = static_cast<std::int32_t>(s.window_ + s.selected_[i]);
      } else {
        for (index_t e = 0; e < visible; ++e) s.candidates_[n++] = static_cast<std::int32_t>(s.window_ + e);
      }
    }

    const sparse_attention_op::params core{.q = q,
                                           .kv = s.kv_rows(),
                                           .candidates = {s.candidates_.data(), static_cast<std::size_t>(n)},
                                           .sink = w_.attn_sink,
                                           .scale = 1.0f / std::sqrt(static_cast<float>(c)),
                                           .out = o,
                                           .workspace = s.attention_workspace_};
    (void)kernel<sparse_attention_op, cpu>::run(core);
    // Values carry absolute rotation; rotating the output by -t leaves each entry at s - t.
    rope_.apply_rows(o, t, /*inverse=*/true);

    // Grouped low-rank output: group j (n_h/g consecutive heads) through its own wo_a block.
    const index_t in_g = shape::heads * c / shape::groups;
    for (index_t j = 0; j < shape::groups; ++j)
      matvec(w_.wo_a.slice(j * shape::d_g, (j + 1) * shape::d_g),
             {s.o_.data() + j * in_g, static_cast<std::size_t>(in_g)},
             {s.u_.data() + j * shape::d_g, static_cast<std::size_t>(shape::d_g)});
    matvec(w_.wo_b, s.u_, y);
  }

  static std::span<const float> view_span(tensor_view<const float, 1> v) {
    return {v.data(), static_cast<std::size_t>(v.extent(0))};
  }

  attention_weights w_;
  rope_table rope_;
  float eps_;
};

// Calls f.template operator()<P>() with the policy of a layer kind: how a model that loops over
// its layers at run time reaches the compile-time policy of each.
template <class F>
decltype(auto) visit_policy(config::layer_kind kind, F&& f) {
  switch (kind) {
    case config::layer_kind::csa:
      return f.template operator()<csa>();
    case config::layer_kind::hca:
      return f.template operator()<hca>();
    case config::layer_kind::swa:
      break;
  }
  return f.template operator()<swa>();
}

}  // namespace dsv4::attn
