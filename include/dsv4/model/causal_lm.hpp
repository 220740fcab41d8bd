// causal_lm<C, Policies>: the whole DeepSeek-V4 model (spec §2), composed at compile time from the
// policies of model/policies.hpp and driven at run time over a handful of layer kinds.
//
//   e = embed[ids]                            (N, d)          every new token of the call
//   X = residual::expand(e)                   (N, hc, d)
//   for each layer l (run-time loop; its kind picks one of three attention layers):
//     X = post(attention_l(attn_norm(pre(X))), X)      attention per sequence, over its cache
//     X = post(moe_l(ffn_norm(pre(X)), ids), X)        hash-routed layers read the token ids
//   h = residual::head(X)                     (R, d)          only the rows whose logits are asked
//   logits = norm(h) . head^T                 (R, vocab)
//
// One forward takes a batch of sequences, each at its own position with its own number of new
// tokens: a prefill, a chunk of a longer prefill and a decode step are the same call. All tokens of
// the call, whatever sequence they belong to, go through each layer together: the mHC sites, the
// norms and the MoE (its router and one grouped expert GEMM) see one (N, ...) batch, and the
// attention layer runs its projections as GEMMs over the call's rows; only the attention over a
// sequence's cache is per sequence. Every row's arithmetic is independent of the other rows
// (core/linear_op.hpp's order contract), so a sequence's logits are bit-identical alone or batched,
// and for any thread count.
//
// Memory: the engine owns it. The KV cache (kv_cache_for<C>, every layer; make_cache builds one
// with the geometry the policies give) holds each sequence's state; workspace_bytes(max_tokens,
// capacity) sizes the scratch of a call of up to max_tokens tokens; forward allocates nothing.
//
// Threads: a decode step is hundreds of short parallel loops, all on one team of threads: the
// executor the caller installed (core/parallel.hpp), else parallel_for's default pool of
// max_threads() threads, whose workers stay alive between loops (starting one costs about a
// microsecond) and sleep when the model is idle. An engine with its own pool installs it; one that
// calls forward from several threads at once gives each its own executor (the default pool runs
// one loop at a time, a second caller's loops on the caller's thread alone).
//
// Checks: forward validates everything the caller controls before its first write: token ids in
// the vocabulary, sequences open, distinct and with every layer at the same position, capacity,
// the pool's free pages for every layer, the logits view and the workspace. A failed check leaves
// the cache as it was. The one failure that can only show mid-call is an activation that stops being
// finite (weights whose products overflow float); the model then returns each sequence of the call to
// its starting position where the cache allows it (kv_cache::truncate) and says so.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "dsv4/attn/attention.hpp"
#include "dsv4/attn/kv_cache.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/workspace.hpp"
#include "dsv4/mhc/concepts.hpp"
#include "dsv4/model/policies.hpp"
#include "dsv4/model/weights.hpp"

namespace dsv4::model {

// Which rows of logits a sequence of the batch asks for.
enum class logits_rows : std::uint8_t {
  none,  // only advance the cache (a prefill chunk before the last)
  last,  // its last new token: decoding
  all,   // every new token: scoring a text
};

// One sequence's part of a forward call: its new tokens, appended at its current position.
struct sequence_input {
  attn::sequence_id seq;
  std::span<const std::int32_t> tokens;  // (n) n >= 1
  logits_rows logits = logits_rows::last;
};

template <config::model_config C, class Policies = default_policies<C>>
class causal_lm {
  static_assert(check_policies<C, Policies>::ok);

 public:
  using policies = Policies;
  static constexpr config::model_config model_config = C;
  using weights = model_weights<C>;
  using cache_type = attn::kv_cache_for<C>;
  using residual = typename Policies::residual;
  static constexpr numerics num = Policies::num;
  static constexpr attn::shape shape = attn::shape_of<C>;
  template <class P>
  using attention_of = attn::attention<shape, P, num>;
  using swa_layer = attention_of<typename Policies::swa_attention>;
  using csa_layer = attention_of<typename Policies::csa_attention>;
  using hca_layer = attention_of<typename Policies::hca_attention>;
  using score_ffn = typename Policies::template ffn<typename Policies::score_router>;
  using hash_ffn = typename Policies::template ffn<typename Policies::hash_router>;

  causal_lm(const causal_lm&) = delete;  // the FFNs view the expert tables of w_
  causal_lm& operator=(const causal_lm&) = delete;
  causal_lm(causal_lm&&) noexcept = default;
  causal_lm& operator=(causal_lm&&) noexcept = default;
  ~causal_lm() = default;

  // Checks every weight against C and the parameters, and builds the layers.
  static result<causal_lm> create(const weights& w, const config::model_params& params) {
    DSV4_TRY(config::check_params(C, params));
    DSV4_TRY(check_top(w));
    causal_lm m(w, params);
    for (int l = 0; l < C.n_layers; ++l) {
      auto built = m.build_layer(l, w.layers[static_cast<std::size_t>(l)]);
      if (!built.ok()) return status{built.code(), "layers." + std::to_string(l) + ": " + built.message()};
    }
    for (std::size_t i = 0; i < w.mtp.size(); ++i) {
      const std::string p = "mtp." + std::to_string(i) + ".";
      auto built = m.build_mtp(static_cast<int>(i), w.mtp[i]);
      if (!built.ok()) return status{built.code(), p + built.message()};
    }
    return m;
  }

  // The cache geometry of layer l (a main layer, or an MTP block from n_layers on), and of every
  // layer, as the policies make them.
  static attn::kv_layer_geometry cache_layer(int l, index_t capacity) {
    return visit_kind(config::layer_kind_of(C, std::min(l, C.n_layers)),
                      [&]<class L>() { return L::geometry(capacity); });
  }
  static std::vector<attn::kv_layer_geometry> cache_layers(index_t capacity) {
    std::vector<attn::kv_layer_geometry> layers;
    for (int l = 0; l < C.n_layers + C.n_mtp_layers; ++l) layers.push_back(cache_layer(l, capacity));
    return layers;
  }
  // A cache over the engine's pool (kv_cache::create), one that owns its pool, and one that owns
  // memory for max_sequences sequences of `capacity` tokens.
  static result<cache_type> make_cache(const attn::kv_cache_options& o, std::span<std::byte> pool) {
    if (o.capacity <= 0) return status{errc::invalid_argument, "kv_cache: capacity must be positive"};
    return cache_type::create(o, cache_layers(o.capacity), pool);
  }
  static result<cache_type> make_cache(const attn::kv_cache_options& o) {
    if (o.capacity <= 0) return status{errc::invalid_argument, "kv_cache: capacity must be positive"};
    return cache_type::create(o, cache_layers(o.capacity));
  }
  static result<cache_type> make_cache(index_t max_sequences, index_t capacity) {
    return make_cache(attn::kv_cache_options{max_sequences, capacity, 0, 0});
  }

  // Bytes of workspace a forward of up to max_tokens tokens needs with a cache of `capacity`
  // tokens per sequence (SIZE_MAX when that does not fit in memory).
  std::size_t workspace_bytes(index_t max_tokens, index_t capacity) const {
    workspace_layout size_only;
    carve(size_only, std::max<index_t>(max_tokens, 0), std::max<index_t>(max_tokens, 0), capacity);
    return size_only.used;
  }

  // Appends each batch entry's tokens to its sequence and writes the logits it asks for into
  // consecutive rows of `logits` (rows, vocab), in batch order; `hidden`, when not empty, receives
  // the final residual streams (N, hc, d) of every token of the call, before the HC head (what the
  // MTP block reads). ws: workspace_bytes(N, cache.capacity()) bytes, 64-byte aligned, for the
  // call's N tokens.
  status forward(cache_type& cache, std::span<const sequence_input> batch, tensor_view<float, 2> logits,
                 tensor_view<float, 3> hidden, std::span<std::byte> ws) const {
    return run_forward(cache, batch, logits, hidden, ws);
  }
  status forward(cache_type& cache, std::span<const sequence_input> batch, tensor_view<float, 2> logits,
                 std::span<std::byte> ws) const {
    return forward(cache, batch, logits, {}, ws);
  }
  // The same with a workspace allocated for the call (convenient; engines pass their own).
  status forward(cache_type& cache, std::span<const sequence_input> batch, tensor_view<float, 2> logits,
                 tensor_view<float, 3> hidden = {}) const {
    return with_workspace(cache, batch,
                          [&](std::span<std::byte> ws) { return forward(cache, batch, logits, hidden, ws); });
  }

  // Whether the weights hold an MTP block (a checkpoint may leave it out).
  bool has_mtp() const { return !mtp_slots_.empty(); }

  // The MTP block (spec §10) over a batch: entry i's tokens are the tokens that follow the
  // positions the MTP block of its sequence is at, and the rows of `hidden` (N, hc, d), in batch
  // order, the main model's final streams at those positions (forward's `hidden`). Appends to the
  // sequence's MTP cache layer and writes the draft logits the entries ask for. The MTP block may
  // run only over positions the main model has processed: from its own position p, n tokens need
  // the main layers at p + n or beyond.
  status mtp_forward(cache_type& cache, std::span<const sequence_input> batch,
                     tensor_view<const float, 3> hidden, tensor_view<float, 2> logits,
                     std::span<std::byte> ws) const {
    return run_mtp_forward(cache, batch, hidden, logits, ws);
  }
  status mtp_forward(cache_type& cache, std::span<const sequence_input> batch,
                     tensor_view<const float, 3> hidden, tensor_view<float, 2> logits) const {
    return with_workspace(
        cache, batch, [&](std::span<std::byte> ws) { return mtp_forward(cache, batch, hidden, logits, ws); });
  }

  // The rows of logits a batch writes.
  static index_t logits_rows_of(std::span<const sequence_input> batch) {
    index_t rows = 0;
    for (const sequence_input& s : batch) rows += rows_of(s);
    return rows;
  }

  const config::model_params& params() const { return params_; }

 private:
  using other_matrix = typename matrices_of<C>::other;
  using linear_matrix = typename matrices_of<C>::linear;
  static constexpr index_t d = C.d_model, hc = C.hc_mult, vocab = C.vocab_size;
  static constexpr bool released = rounds_activations(num);  // released's roundings (::released, ::fast)

  struct aligned_delete {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{workspace_align}); }
  };

  status run_forward(cache_type& cache, std::span<const sequence_input> batch, tensor_view<float, 2> logits,
                     tensor_view<float, 3> hidden, std::span<std::byte> ws) const {
    index_t tokens = 0, rows = 0;
    DSV4_TRY(check_call(cache, batch, main_layer, logits, ws, tokens, rows));
    DSV4_TRY(check_hidden(hidden, tokens, logits, ws));
    if (tokens == 0) return {};
    workspace_layout l{ws.data()};
    const buffers b = carve(l, tokens, rows, cache.capacity());
    DSV4_TRY(embed(batch, b));
    DSV4_TRY(residual::expand(b.y, b.x));
    for (int layer = 0; layer < C.n_layers; ++layer) DSV4_TRY(run_block(cache, batch, layer, b));
    if (!hidden.empty()) std::copy_n(b.x.data(), b.x.size(), hidden.data());
    return write_logits(batch, b, w_.hc_head, w_.norm, logits);
  }

  status run_mtp_forward(cache_type& cache, std::span<const sequence_input> batch,
                         tensor_view<const float, 3> hidden, tensor_view<float, 2> logits,
                         std::span<std::byte> ws) const {
    if (!has_mtp()) return {errc::invalid_state, "mtp_forward: the model's weights hold no MTP block"};
    index_t tokens = 0, rows = 0;
    DSV4_TRY(check_call(cache, batch, mtp_layer, logits, ws, tokens, rows));
    DSV4_TRY(check_shape(hidden, {tokens, hc, d}, "hidden"));
    DSV4_TRY(check_contiguous(hidden, "hidden"));
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const index_t main = *cache.tokens(batch[i].seq, 0), at = *cache.tokens(batch[i].seq, mtp_layer);
      if (at + static_cast<index_t>(batch[i].tokens.size()) > main)
        return {errc::invalid_argument,
                "batch entry " + std::to_string(i) + ": the MTP block at position " + std::to_string(at) +
                    " takes " + std::to_string(batch[i].tokens.size()) +
                    " tokens, the main layers have processed " + std::to_string(main)};
    }
    if (tokens == 0) return {};
    workspace_layout l{ws.data()};
    const buffers b = carve(l, tokens, rows, cache.capacity());
    const mtp_weights<C>& w = w_.mtp.front();
    // X0 = e_proj(enorm(embed(next))) on every stream + h_proj(hnorm(H)) per stream.
    DSV4_TRY(embed(batch, b));
    norm_rows(b.y, w.enorm, b.x_in);
    DSV4_TRY(project(w.e_proj, b.x_in, b.y, b));
    for (index_t j = 0; j < hc; ++j) {
      norm_rows(tensor_view<const float, 2>(hidden.data() + j * d, {tokens, d}, {hc * d, 1}), w.hnorm,
                b.x_in);
      DSV4_TRY(
          project(w.h_proj, b.x_in, tensor_view<float, 2>(b.x.data() + j * d, {tokens, d}, {hc * d, 1}), b));
    }
    parallel_for(0, tokens, [&](index_t t) {
      for (index_t j = 0; j < hc; ++j)
        for (index_t k = 0; k < d; ++k) b.x(t, j, k) = to_activation(num, b.x(t, j, k) + b.y(t, k));
    });
    DSV4_TRY(run_block(cache, batch, mtp_layer, b));
    return write_logits(batch, b, w.hc_head, w.norm, logits);
  }

  // Where a block's attention and FFN live: an index into the vector of their kinds.
  struct layer_slot {
    config::layer_kind kind = config::layer_kind::swa;
    bool hash = false;
    std::size_t attn = 0, ffn = 0;
  };
  static constexpr int main_layer = 0, mtp_layer = C.n_layers;  // cache layers the checks look at

  // One call's scratch, for n tokens and r logits rows (one layout for the size and the carving).
  struct buffers {
    std::span<std::int32_t> ids;            // (n) the call's tokens in batch order
    std::span<attn::sequence_tokens> seqs;  // (batch) for the attention layers
    std::span<index_t> starts;              // (batch) positions before the call
    tensor_view<float, 3> x;                // (n, hc, d) residual streams
    tensor_view<float, 2> x_in, y;          // (n, d) a site's collapsed input, a sublayer's output
    typename residual::site_state state;    // (n) the site's coefficients
    std::span<std::byte> attn_ws, ffn_ws;
    std::span<float> lanes;        // a linear's input in its weights' lane order
    tensor_view<float, 3> head_x;  // (r, hc, d) the streams of the rows asked for
    tensor_view<float, 2> h;       // (r, d)
  };
  buffers carve(workspace_layout& l, index_t n, index_t r, index_t capacity) const {
    const auto matrix = [&](index_t rows, index_t cols) {
      return tensor_view<float, 2>(l.take<float>(rows * cols), {rows, cols});
    };
    const auto bytes = [&](std::size_t count) {
      if (count == SIZE_MAX) l.used = SIZE_MAX;
      return l.take_span<std::byte>(static_cast<std::int64_t>(std::min<std::size_t>(count, INT64_MAX)));
    };
    buffers b;
    b.ids = l.take_span<std::int32_t>(n);
    b.seqs = l.take_span<attn::sequence_tokens>(n);  // a sequence has at least one token
    b.starts = l.take_span<index_t>(n);
    b.x = {l.take<float>(n * hc * d), {n, hc, d}};
    b.x_in = matrix(n, d);
    b.y = matrix(n, d);
    b.state = residual::make_state(l.take<float>(residual::state_floats(n)), n);
    std::size_t attn_bytes = 0;
    for (const config::layer_kind k :
         {config::layer_kind::swa, config::layer_kind::csa, config::layer_kind::hca})
      attn_bytes =
          std::max(attn_bytes, visit_kind(k, [&]<class L>() { return L::workspace_bytes(capacity); }));
    b.attn_ws = bytes(attn_bytes);
    std::size_t ffn_bytes = 0;
    if (!score_ffns_.empty()) ffn_bytes = std::max(ffn_bytes, score_ffns_.front().workspace_bytes(n));
    if (!hash_ffns_.empty()) ffn_bytes = std::max(ffn_bytes, hash_ffns_.front().workspace_bytes(n));
    b.ffn_ws = bytes(ffn_bytes);
    b.lanes = l.take_span<float>(std::max(linear_op<other_matrix>::workspace_floats(r, d),
                                          linear_op<linear_matrix>::workspace_floats(n, d)));
    b.head_x = {l.take<float>(r * hc * d), {r, hc, d}};
    b.h = matrix(r, d);
    return b;
  }

  causal_lm(const weights& w, const config::model_params& p)
      : w_(w), params_(p), settings_(mhc::settings_of(C, p)) {}

  // f(ws) with a workspace allocated for the batch.
  template <class F>
  status with_workspace(const cache_type& cache, std::span<const sequence_input> batch, F&& f) const {
    index_t tokens = 0;
    for (const sequence_input& s : batch) tokens += static_cast<index_t>(s.tokens.size());
    const std::size_t need = workspace_bytes(tokens, cache.capacity());
    if (need == SIZE_MAX) return check_workspace({}, need);
    const std::unique_ptr<std::byte[], aligned_delete> ws(
        static_cast<std::byte*>(::operator new[](need, std::align_val_t{workspace_align}, std::nothrow)));
    if (!ws) return {errc::out_of_range, "workspace: cannot allocate " + std::to_string(need) + " bytes"};
    return f(std::span<std::byte>(ws.get(), need));
  }

  // Calls f.template operator()<L>() with the attention layer type of a layer kind.
  template <class F>
  static decltype(auto) visit_kind(config::layer_kind kind, F&& f) {
    switch (kind) {
      case config::layer_kind::csa:
        return f.template operator()<csa_layer>();
      case config::layer_kind::hca:
        return f.template operator()<hca_layer>();
      case config::layer_kind::swa:
        break;
    }
    return f.template operator()<swa_layer>();
  }
  template <class F>
  status with_attention(const layer_slot& s, F&& f) const {
    switch (s.kind) {
      case config::layer_kind::csa:
        return f(csa_[s.attn]);
      case config::layer_kind::hca:
        return f(hca_[s.attn]);
      case config::layer_kind::swa:
        break;
    }
    return f(swa_[s.attn]);
  }

  static status check_vector(tensor_view<const float, 1> v, index_t n, const std::string& name) {
    DSV4_TRY(check_shape(v, {n}, name));
    return check_contiguous(v, name);
  }
  static status check_site(const mhc::hc_site_weights& s, const std::string& name) {
    if constexpr (std::is_same_v<typename residual::site_weights, mhc::hc_site_weights>) {
      DSV4_TRY(check_shape(s.fn, {mhc::mix_width(hc), hc * d}, name + "_fn"));
      DSV4_TRY(check_shape(s.scale, {3}, name + "_scale"));
      DSV4_TRY(check_shape(s.base, {mhc::mix_width(hc)}, name + "_base"));
    }
    return {};
  }
  static status check_head(const mhc::hc_head_weights& h, const tensor_view<const float, 1>& norm) {
    if constexpr (std::is_same_v<typename residual::head_weights, mhc::hc_head_weights>) {
      DSV4_TRY(check_shape(h.fn, {hc, hc * d}, "hc_head_fn"));
      DSV4_TRY(check_shape(h.scale, {1}, "hc_head_scale"));
      DSV4_TRY(check_shape(h.base, {hc}, "hc_head_base"));
    }
    return check_vector(norm, d, "norm.weight");
  }
  static status check_top(const weights& w) {
    DSV4_TRY(attn::check_matrix(w.embed, vocab, d, "embed"));
    DSV4_TRY(attn::check_matrix(w.head, vocab, d, "head"));
    DSV4_TRY(check_head(w.hc_head, w.norm));
    if (static_cast<int>(w.layers.size()) != C.n_layers)
      return {errc::shape_mismatch, "layers: " + std::to_string(w.layers.size()) +
                                        " blocks, the config has " + std::to_string(C.n_layers)};
    if (!w.mtp.empty() && static_cast<int>(w.mtp.size()) != C.n_mtp_layers)
      return {errc::shape_mismatch, "mtp: " + std::to_string(w.mtp.size()) + " blocks, the config has " +
                                        std::to_string(C.n_mtp_layers)};
    return {};
  }

  template <class Site>
  static Site site_of(const mhc::hc_site_weights& w) {
    if constexpr (std::is_same_v<Site, mhc::hc_site_weights>) {
      return w;
    } else {
      return {};
    }
  }
  template <class Head>
  static Head head_of(const mhc::hc_head_weights& w) {
    if constexpr (std::is_same_v<Head, mhc::hc_head_weights>) {
      return w;
    } else {
      return {};
    }
  }

  // The attention and FFN of block b, at cache layer `layer`, into slots_.
  status build_layer(int layer, const block_weights<C>& b) {
    DSV4_TRY(check_vector(b.attn_norm, d, "attn_norm.weight"));
    DSV4_TRY(check_vector(b.ffn_norm, d, "ffn_norm.weight"));
    DSV4_TRY(check_site(b.hc_attn, "hc_attn"));
    DSV4_TRY(check_site(b.hc_ffn, "hc_ffn"));
    layer_slot s;
    s.kind = config::layer_kind_of(C, layer);
    DSV4_TRY(visit_kind(s.kind, [&]<class L>() -> status {
      auto made = L::create(b.attn, params_);
      if (!made) return made.error();
      // The normed input of a finite residual is at most sqrt(d) * max|attn_norm| in magnitude:
      // the layer must accept all of it, so that no finite input is refused after earlier layers
      // wrote to the cache.
      float most = 0.0f;
      for (index_t k = 0; k < d; ++k) most = std::max(most, std::fabs(b.attn_norm(k)));
      const float reach = std::sqrt(static_cast<float>(d)) * most;
      if (!(reach * 1.01f <= made->x_limit()))
        return {errc::invalid_argument, "attn_norm.weight: its largest value lets normed inputs reach " +
                                            std::to_string(reach) + ", beyond the attention's x_limit() " +
                                            std::to_string(made->x_limit())};
      if constexpr (std::is_same_v<L, csa_layer>) {
        s.attn = csa_.size();
        csa_.push_back(std::move(*made));
      } else if constexpr (std::is_same_v<L, hca_layer>) {
        s.attn = hca_.size();
        hca_.push_back(std::move(*made));
      } else {
        s.attn = swa_.size();
        swa_.push_back(std::move(*made));
      }
      return {};
    }));
    s.hash = layer < C.n_layers && config::is_hash_layer(C, layer);
    const std::span<const moe::swiglu_weights<typename matrices_of<C>::expert>> experts(b.experts);
    if (s.hash) {
      auto router = Policies::hash_router::from(C, params_, b.gate, b.tid2eid);
      if (!router) return status{router.error().code(), "ffn.gate: " + router.error().message()};
      auto f = hash_ffn::from(C, params_, *router, experts, b.shared);
      if (!f) return status{f.error().code(), "ffn: " + f.error().message()};
      s.ffn = hash_ffns_.size();
      hash_ffns_.push_back(*f);
    } else {
      auto router = Policies::score_router::from(C, params_, b.gate, b.gate_bias);
      if (!router) return status{router.error().code(), "ffn.gate: " + router.error().message()};
      auto f = score_ffn::from(C, params_, *router, experts, b.shared);
      if (!f) return status{f.error().code(), "ffn: " + f.error().message()};
      s.ffn = score_ffns_.size();
      score_ffns_.push_back(*f);
    }
    slots_.push_back(s);
    return {};
  }
  status build_mtp(int i, const mtp_weights<C>& m) {
    DSV4_TRY(build_layer(C.n_layers + i, m.block));
    DSV4_TRY(attn::check_matrix(m.e_proj, d, d, "e_proj"));
    DSV4_TRY(attn::check_matrix(m.h_proj, d, d, "h_proj"));
    DSV4_TRY(check_vector(m.enorm, d, "enorm.weight"));
    DSV4_TRY(check_vector(m.hnorm, d, "hnorm.weight"));
    DSV4_TRY(check_head(m.hc_head, m.norm));
    mtp_slots_.push_back(slots_.back());
    slots_.pop_back();
    return {};
  }

  static index_t rows_of(const sequence_input& s) {
    switch (s.logits) {
      case logits_rows::none:
        return 0;
      case logits_rows::last:
        return 1;
      case logits_rows::all:
        break;
    }
    return static_cast<index_t>(s.tokens.size());
  }

  // The checks of a call that appends to cache layer `first` (the main layers from 0, or the MTP
  // block), before anything is written.
  status check_call(const cache_type& cache, std::span<const sequence_input> batch, int first,
                    tensor_view<float, 2> logits, std::span<std::byte> ws, index_t& tokens,
                    index_t& rows) const {
    const int last = first == main_layer ? C.n_layers : C.n_layers + 1;
    if (cache.layers() < last)
      return {errc::invalid_argument, "kv_cache: " + std::to_string(cache.layers()) +
                                          " layers, the model needs " + std::to_string(last)};
    for (int l = first; l < last; ++l)
      if (cache.geometry(l) != cache_layer(l, cache.capacity()))
        return {errc::invalid_argument, "kv_cache: layer " + std::to_string(l) +
                                            " was not made for this model's policies (make_cache)"};
    if (static_cast<index_t>(batch.size()) > cache.max_sequences())
      return {errc::out_of_range, "batch: " + std::to_string(batch.size()) + " sequences, the cache holds " +
                                      std::to_string(cache.max_sequences())};
    tokens = 0;
    rows = 0;
    index_t pages = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const sequence_input& s = batch[i];
      const auto entry = [i] { return "batch entry " + std::to_string(i); };  // for messages only
      DSV4_TRY(cache.check_open(s.seq));
      for (std::size_t j = 0; j < i; ++j)
        if (batch[j].seq == s.seq)
          return {errc::invalid_argument, "batch: a sequence appears twice (entries " + std::to_string(j) +
                                              " and " + std::to_string(i) + ")"};
      if (s.tokens.empty()) return {errc::invalid_argument, entry() + ": no tokens"};
      if (s.logits != logits_rows::none && s.logits != logits_rows::last && s.logits != logits_rows::all)
        return {errc::invalid_argument, entry() + ": logits is not a logits_rows value"};
      for (std::size_t k = 0; k < s.tokens.size(); ++k)
        if (s.tokens[k] < 0 || s.tokens[k] >= vocab)
          return {errc::invalid_argument, entry() + ": token " + std::to_string(k) + " is " +
                                              std::to_string(s.tokens[k]) + ", outside the vocabulary [0, " +
                                              std::to_string(vocab) + ")"};
      const index_t at = *cache.tokens(s.seq, first), n = static_cast<index_t>(s.tokens.size());
      for (int l = first + 1; l < last; ++l)
        if (*cache.tokens(s.seq, l) != at)
          return {errc::invalid_state, entry() + ": layer " + std::to_string(l) + " holds " +
                                           std::to_string(*cache.tokens(s.seq, l)) + " tokens, layer " +
                                           std::to_string(first) + " " + std::to_string(at) +
                                           " (every layer of a sequence advances together)"};
      if (n > cache.capacity() - at)
        return {errc::out_of_range, entry() + ": " + std::to_string(n) + " tokens from position " +
                                        std::to_string(at) + " pass the cache capacity " +
                                        std::to_string(cache.capacity())};
      for (int l = first; l < last; ++l) pages += cache.pages_to_append(l, s.seq, n);
      tokens += n;
      rows += rows_of(s);
    }
    if (pages > cache.free_pages()) return cache.pool_exhausted(pages, cache.free_pages());
    DSV4_TRY(check_shape(logits, {rows, vocab}, "logits"));
    DSV4_TRY(check_contiguous(logits, "logits"));
    const tensor_view<const std::byte, 1> ws_view(ws.data(), {static_cast<index_t>(ws.size())});
    if (overlaps(logits, ws_view))
      return {errc::invalid_argument, "logits and the workspace must not overlap"};
    return tokens == 0 ? status{} : check_workspace(ws, workspace_bytes(tokens, cache.capacity()));
  }
  static status check_hidden(tensor_view<float, 3> hidden, index_t tokens, tensor_view<float, 2> logits,
                             std::span<std::byte> ws) {
    if (hidden.empty()) return {};
    DSV4_TRY(check_shape(hidden, {tokens, hc, d}, "hidden"));
    DSV4_TRY(check_contiguous(hidden, "hidden"));
    const tensor_view<const std::byte, 1> ws_view(ws.data(), {static_cast<index_t>(ws.size())});
    if (overlaps(hidden, ws_view) || overlaps(hidden, logits))
      return {errc::invalid_argument, "hidden must not overlap the logits or the workspace"};
    return {};
  }

  // x (n, d) -> y: the weighted RMS norm of each row, a BF16 activation under released numerics.
  void norm_rows(tensor_view<const float, 2> x, tensor_view<const float, 1> w,
                 tensor_view<float, 2> y) const {
    const std::span<const float> weight(w.data(), static_cast<std::size_t>(d));
    parallel_for(0, x.extent(0), [&](index_t t) {
      const std::span<float> out(&y(t, 0), static_cast<std::size_t>(d));
      rms_norm(std::span<const float>(&x(t, 0), static_cast<std::size_t>(d)), weight, params_.rms_norm_eps,
               out);
      to_activation(num, out);
    });
  }

  // y (n, out) = x . W^T as the released model's linear() computes it: x (BF16) FP8-simulated in
  // place where W is FP8 or FP4, the output a BF16 activation (both under released numerics only;
  // numerics::fast gives FP4 weights x's int8 blocks instead of the FP8 step).
  template <weight_matrix W>
  status project(const W& w, tensor_view<float, 2> x, tensor_view<float, 2> y, const buffers& b) const {
    if constexpr (released)
      for (index_t t = 0; t < x.extent(0); ++t)
        to_linear_input<W>(num, std::span<float>(&x(t, 0), static_cast<std::size_t>(x.extent(1))));
    DSV4_TRY(linear(w, tensor_view<const float, 2>(x), y, b.lanes, num));
    if constexpr (released)
      for (index_t t = 0; t < y.extent(0); ++t)
        to_activation(num, std::span<float>(&y(t, 0), static_cast<std::size_t>(y.extent(1))));
    return {};
  }

  // The call's token ids, the attention layers' view of the batch, and the embedding rows in y
  // (the released model's BF16 rows).
  status embed(std::span<const sequence_input> batch, const buffers& b) const {
    index_t row = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      std::construct_at(&b.seqs[i],
                        attn::sequence_tokens{batch[i].seq, static_cast<index_t>(batch[i].tokens.size())});
      for (const std::int32_t id : batch[i].tokens) b.ids[static_cast<std::size_t>(row++)] = id;
    }
    parallel_for(0, row, [&](index_t t) {
      float* e = &b.y(t, 0);
      for (index_t k = 0; k < d; k += weight_chunk)
        w_.embed.decode(b.ids[static_cast<std::size_t>(t)], k, std::min(weight_chunk, d - k), e + k);
      to_activation(num, std::span<float>(e, static_cast<std::size_t>(d)));
    });
    return {};
  }

  // One decoder block at cache layer `layer` (a main layer, or the MTP block's) over the streams b.x.
  status run_block(cache_type& cache, std::span<const sequence_input> batch, int layer,
                   const buffers& b) const {
    const bool mtp = layer >= C.n_layers;
    const block_weights<C>& w = mtp ? w_.mtp[static_cast<std::size_t>(layer - C.n_layers)].block
                                    : w_.layers[static_cast<std::size_t>(layer)];
    const layer_slot& s = mtp ? mtp_slots_[static_cast<std::size_t>(layer - C.n_layers)]
                              : slots_[static_cast<std::size_t>(layer)];
    for (std::size_t i = 0; i < batch.size(); ++i) b.starts[i] = *cache.tokens(batch[i].seq, layer);
    using site = typename residual::site_weights;
    DSV4_TRY(residual::pre(site_of<site>(w.hc_attn), settings_, b.x, b.y, b.state));
    norm_rows(b.y, w.attn_norm, b.x_in);
    const std::span<const attn::sequence_tokens> seqs = b.seqs.first(batch.size());
    const status a = with_attention(s, [&](const auto& attention) {
      return attention.forward(cache, layer, seqs, b.x_in, b.y, b.attn_ws);
    });
    if (!a.ok()) return abandon(cache, batch, b, layer, a);
    DSV4_TRY(residual::post(b.y, b.x, b.state, b.x));
    DSV4_TRY(residual::pre(site_of<site>(w.hc_ffn), settings_, b.x, b.y, b.state));
    norm_rows(b.y, w.ffn_norm, b.x_in);
    const moe::ffn_input in{b.x_in, b.ids};
    DSV4_TRY(s.hash ? hash_ffns_[s.ffn].forward(in, b.y, b.ffn_ws)
                    : score_ffns_[s.ffn].forward(in, b.y, b.ffn_ws));
    return residual::post(b.y, b.x, b.state, b.x);
  }

  // The HC head, the final norm and the LM head for the rows the batch asks for.
  status write_logits(std::span<const sequence_input> batch, const buffers& b,
                      const mhc::hc_head_weights& head, tensor_view<const float, 1> norm,
                      tensor_view<float, 2> logits) const {
    const index_t r = logits.extent(0);
    if (r == 0) return {};
    index_t row = 0, out = 0;
    for (const sequence_input& s : batch) {
      const index_t n = static_cast<index_t>(s.tokens.size()), first = n - rows_of(s);
      for (index_t k = first; k < n; ++k, ++out)
        std::copy_n(&b.x(row + k, 0, 0), hc * d, &b.head_x(out, 0, 0));
      row += n;
    }
    DSV4_TRY(residual::head(head_of<typename residual::head_weights>(head), settings_, b.head_x, b.h));
    norm_rows(b.h, norm, b.h);
    return linear(w_.head, tensor_view<const float, 2>(b.h), logits, b.lanes);
  }

  // After a layer refused its input mid-call: every sequence back to where it was before the call
  // in every layer (b.starts holds the refusing layer's), where the cache allows it, and the layer named.
  status abandon(cache_type& cache, std::span<const sequence_input> batch, const buffers& b, int layer,
                 const status& why) const {
    std::string what =
        (layer < C.n_layers ? "layers." + std::to_string(layer) : std::string("mtp")) + ": " + why.message();
    if (layer == main_layer || layer >= C.n_layers) return {why.code(), what};  // nothing was written
    bool stuck = false;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (cache.truncate(batch[i].seq, b.starts[i]).ok()) continue;
      what.append(stuck ? ", " : "; batch entries that could not return to their start (release them): ");
      what.append(std::to_string(i));
      stuck = true;
    }
    return {why.code(), what};
  }

  weights w_;
  config::model_params params_;
  mhc::hc_settings settings_;
  std::vector<layer_slot> slots_;      // (n_layers)
  std::vector<layer_slot> mtp_slots_;  // (n_mtp_layers) or none
  std::vector<swa_layer> swa_;
  std::vector<csa_layer> csa_;
  std::vector<hca_layer> hca_;
  std::vector<score_ffn> score_ffns_;
  std::vector<hash_ffn> hash_ffns_;
};

}  // namespace dsv4::model
