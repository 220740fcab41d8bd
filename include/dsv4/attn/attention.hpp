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
// attention<S, P, Num> is the layer policy P makes of shape S (shape.hpp), and
// attention_layer<C, P, Num> the one of model config C. It holds views of the weights and the
// layer's RoPE table; the state of every sequence lives in a kv_cache<kv_shape_of(S)>
// (kv_cache.hpp), in the storage format S names. One call takes a batch of sequences, each at its own
// position, and appends a number of tokens to each: a prefill from position 0, a chunk of a longer prefill
// and a single-token decode are the same call. The call's rows (the batch's tokens, back to back) run in
// chunks of up to chunk_rows consecutive rows, whatever sequences they belong to: each projection is one
// GEMM over a chunk's rows (core/linear.hpp, whose rows equal one-token products), so a weight is read once
// per chunk, not once per sequence; then the chunk's rows go through the cache in row order, each at its
// own sequence's next position, with the same arithmetic whatever the call's length or company: decoding
// token by token, prefilling in chunks, prefilling at once and any batch of sequences give identical outputs.
//
// Weights: the projections are matrices of core/weight_matrix.hpp in the formats the config names
// (attention_weights_for<S>: linear_format for wq_a, wq_b, wkv, wo_a, wo_b and the indexer's wq_b,
// FP8 with 128x128 block scales in the releases; other_format for the compressors and the
// indexer's weights_proj, BF16), decoded on the fly; norms, ape and the sink are fp32 views.
//
// Numerics (core/numerics.hpp, the template argument Num): numerics::exact is fp32 throughout.
// numerics::released applies every rounding of the released model (spec §13, §18.3):
//   x is a BF16 activation; a linear with FP8 (or FP4) weights reads its input FP8-simulated in
//   1 x 128 tiles, and every linear writes BF16 (wq_a, wq_b, wkv, wo_a, wo_b, the indexer's);
//   wo_a reads BF16 o without FP8 (the reference dequantizes wo_a to BF16 at conversion);
//   the compressors' projections run in fp32 on the BF16 x, whatever their storage;
//   q_norm and kv_norm: fp32 norm times the weight, then BF16; the per-head q norm in BF16
//   arithmetic; RoPE results BF16; the compressor casts its pooled entry to BF16 before its norm;
//   the indexer's score path (indexer_query, indexer_scores) and the core (sparse_attention_op)
//   as their headers say; the de-rotated output BF16.
// numerics::fast is released, except that a linear with FP4 weights (none in the released model's
// attention) quantizes its input to int8 blocks itself (core/linear_q8.hpp).
// The GEMMs accumulate in fp32 in their own order, so a released value can differ from the
// reference's by one BF16 ulp where the two sums fall on either side of a rounding boundary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/concepts.hpp"
#include "dsv4/attn/indexer.hpp"
#include "dsv4/attn/kv_cache.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/attn/shape.hpp"
#include "dsv4/attn/sparse_attention.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/workspace.hpp"

namespace dsv4::attn {

// Views of one layer's attention parameters (checkpoint names attn.*), the projections in the
// formats Linear and Other of core/weight_matrix.hpp. The compressor is read only by compressing policies
// and the indexer only by top-k policies.
template <weight_matrix Linear = f32_matrix, weight_matrix Other = f32_matrix>
struct attention_weights {
  Linear wq_a;                            // (d_c, d)
  tensor_view<const float, 1> q_norm;     // (d_c)
  Linear wq_b;                            // (n_h * c, d_c)
  Linear wkv;                             // (c, d)
  tensor_view<const float, 1> kv_norm;    // (c)
  Linear wo_a;                            // (g * d_g, n_h * c / g)
  Linear wo_b;                            // (d, g * d_g)
  tensor_view<const float, 1> attn_sink;  // (n_h)
  compressor_weights<Other> compressor;
  indexer_weights<Linear, Other> indexer;
};

// The weights of a layer of shape S: its linear_format and other_format.
template <shape S>
using attention_weights_for =
    attention_weights<weight_matrix_for<S.linear_format>, weight_matrix_for<S.other_format>>;

// The released model's per-head query norm (spec §18.3): the BF16 output of wq_b normalized in
// BF16 arithmetic, q <- bf16(q * bf16(rsqrt(bf16(bf16(mean(bf16(q^2))) + eps)))), the mean of the
// rounded squares summed in fp32.
inline void released_head_norm(std::span<float> q, float eps) {
  float sum = 0.0f;
  for (const float v : q) sum += round_to_bf16(v * v);
  const float mean = round_to_bf16(sum / static_cast<float>(q.size()));
  const float r = round_to_bf16(1.0f / std::sqrt(round_to_bf16(mean + eps)));
  for (float& v : q) v = round_to_bf16(v * r);
}

// Shapes of the layer P makes of config S.
template <shape S, attention_policy P>
struct layer_shape {
  static_assert(valid_shape(S),
                "dsv4 attn::shape: dimensions must be positive, head_dim > rope_dim (even), n_heads "
                "divisible by o_groups");
  static constexpr index_t d = S.d_model, d_c = S.q_lora_rank, heads = S.n_heads, c = S.head_dim;
  static constexpr index_t groups = S.o_groups, d_g = S.o_lora_rank;
  static constexpr int ratio = P::compress_ratio(S);
  static constexpr int top_k = P::top_k(S);
  static_assert(ratio >= 0, "dsv4 attention_policy: compress_ratio must be >= 0");
  static_assert(top_k >= 0, "dsv4 attention_policy: top_k must be >= 0");
  static_assert(top_k == 0 || ratio > 0, "dsv4 attention_policy: top_k > 0 needs a compressor (ratio > 0)");
  static_assert(top_k == 0 || (S.index_n_heads > 0 && S.index_head_dim >= S.rope_dim),
                "dsv4 attention_policy: an indexer needs index_n_heads > 0 and index_head_dim >= rope_dim");
  static constexpr compressor_shape compressor{ratio, S.head_dim, P::overlapping(S)};
  static constexpr indexer_shape indexer{S.index_n_heads, S.index_head_dim, top_k,
                                         compressor_shape{ratio, S.index_head_dim, P::overlapping(S)}};
};

// The buffers of one attend_cached call, for a sequence with `window` window rows and up to
// `max_entries` compressed entries: the candidates and what choosing them takes. One layout for
// the size query and the carving (core/workspace.hpp).
template <shape S, attention_policy P>
struct attend_buffers {
  std::span<std::int32_t> candidates;  // (window + max_entries) rows of the sequence's region
  std::span<std::int32_t> selected;    // (max_entries) the indexer's choice
  std::span<float> scores;             // (max_entries) index scores
  std::span<float> index_work;         // indexer_scores' workspace
  std::span<float> core;               // the sparse attention core's workspace

  static attend_buffers carve(workspace_layout& l, index_t window, index_t max_entries) {
    using dims = layer_shape<S, P>;
    using core_op = sparse_attention_op<typename kv_codecs<S.cache_format>::entry>;
    const index_t n = window + max_entries;
    attend_buffers b;
    b.candidates = l.take_span<std::int32_t>(n);
    if constexpr (dims::top_k > 0) {
      b.selected = l.take_span<std::int32_t>(max_entries);
      b.scores = l.take_span<float>(max_entries);
      b.index_work =
          l.take_span<float>(indexer_workspace_floats(S.index_n_heads, S.index_head_dim, max_entries));
    }
    b.core = l.take_span<float>(core_op::workspace_floats(dims::heads, dims::c, n));
    return b;
  }
};

// The attention of the token at position t over what one sequence's cache holds, after the
// token itself was written: the candidates (the window rows of positions t-window+1 .. t, then
// every visible compressed entry or the indexer's top k of them) in one softmax with the sink. q
// (n_h, c) is the token's rotated query, out (n_h, c) receives the attention output, still
// rotated by t. For top-k policies index_q (n_I, c_I) and index_w (n_I) are the indexer's query
// and head weights as indexer_query leaves them. The layer's decode step without its projections
// (what the benchmarks time); b comes from attend_buffers<S, P>::carve for the sequence's window
// and entries. Num selects the index-score and core roundings (indexer_scores,
// sparse_attention_op).
template <shape S, attention_policy P, numerics Num = numerics::exact>
status attend_cached(const typename kv_cache<kv_shape_of(S)>::sequence_view& v, const attend_buffers<S, P>& b,
                     index_t t, tensor_view<const float, 2> q, tensor_view<const float, 2> index_q,
                     std::span<const float> index_w, tensor_view<const float, 1> sink,
                     tensor_view<float, 2> out) {
  using dims = layer_shape<S, P>;
  using codecs = typename kv_cache<kv_shape_of(S)>::codecs;
  index_t n = 0;
  for (index_t p = std::max<index_t>(0, t - v.window + 1); p <= t; ++p)
    b.candidates[static_cast<std::size_t>(n++)] = static_cast<std::int32_t>(index_math::ring_slot(p, v.ring));
  if constexpr (dims::ratio > 0) {
    const index_t visible = index_math::visible_entries<index_t>(t, dims::ratio);
    if constexpr (dims::top_k > 0) {
      const std::span<float> scores = b.scores.first(static_cast<std::size_t>(visible));
      indexer_scores(index_q, index_w, row_region<typename codecs::key, const std::byte>(v.keys), scores,
                     b.index_work, Num);
      const index_t k = select_top_k(scores, dims::top_k, b.selected);
      for (index_t j = 0; j < k; ++j)
        b.candidates[static_cast<std::size_t>(n++)] = static_cast<std::int32_t>(
            index_math::entry_row<index_t>(b.selected[static_cast<std::size_t>(j)], v.ring));
    } else {
      for (index_t e = 0; e < visible; ++e)
        b.candidates[static_cast<std::size_t>(n++)] =
            static_cast<std::int32_t>(index_math::entry_row(e, v.ring));
    }
  }
  using core_op = sparse_attention_op<typename codecs::entry>;
  const typename core_op::params core{.q = q,
                                      .kv = v.rows,
                                      .candidates = b.candidates.first(static_cast<std::size_t>(n)),
                                      .sink = sink,
                                      .scale = 1.0f / std::sqrt(static_cast<float>(dims::c)),
                                      .out = out,
                                      .workspace = b.core,
                                      .num = Num};
  return kernel<core_op, cpu>::run(core);
}

template <shape S, attention_policy P, numerics Num = numerics::exact>
class attention {
  using dims = layer_shape<S, P>;
  using cache_type = kv_cache<kv_shape_of(S)>;
  using sequence_view = typename cache_type::sequence_view;

 public:
  using weights = attention_weights_for<S>;

  // Rows of a call (of one sequence or several) whose projections run as one GEMM (bounds the
  // workspace: about 70K floats per row at V4-Flash shapes).
  static constexpr index_t chunk_rows = 64;

  // Checks every weight the policy reads against the config before the layer can be used.
  // Also bounds the inputs a forward accepts: x_limit(), from the weights that feed the cache.
  static result<attention> create(const weights& w, const config::model_params& params) {
    DSV4_TRY(check_weights(w));
    if (!(params.rms_norm_eps > 0.0f) || !std::isfinite(params.rms_norm_eps))
      return status{errc::invalid_argument, "model_params: rms_norm_eps must be finite and positive"};
    auto limit = cache_input_limit(w);
    if (!limit) return limit.error();
    return attention(w, params, *limit);
  }

  // The largest |x| a forward accepts: every projection of such an x that enters the cache (the
  // latent, the compressors' and the index-key compressor's kv and gate) stays below 2^56 in
  // magnitude, so neither it nor a norm's sum of its squares can overflow, and a finite x can
  // never put a value that is not finite (or a norm collapsed to 0) into a sequence's cache.
  float x_limit() const { return x_limit_; }

  // The geometry this layer needs in a cache of `capacity` tokens per sequence.
  static constexpr kv_layer_geometry geometry(index_t capacity) { return kv_geometry<S, P>(capacity); }
  // A cache with this one layer that owns memory for max_sequences sequences of `capacity` tokens.
  static result<cache_type> make_cache(index_t max_sequences, index_t capacity) {
    if (capacity <= 0) return status{errc::invalid_argument, "kv_cache: capacity must be positive"};
    return cache_type::create(max_sequences, capacity, {geometry(capacity)});
  }

  // Bytes of workspace forward needs with a cache of `capacity` tokens per sequence (SIZE_MAX
  // when that does not fit in memory).
  static std::size_t workspace_bytes(index_t capacity) {
    workspace_layout size_only;
    carve(size_only, capacity);
    return size_only.used;
  }

  // Appends batch[i].tokens tokens to sequence batch[i].seq in layer `layer` of the cache, for
  // every i: the tokens are consecutive rows of x (sum of tokens, d), in batch order, and their
  // outputs the same rows of out. ws: workspace_bytes(cache.capacity()) bytes, 64-byte aligned.
  // Fails, changing nothing, when a shape differs, out overlaps x or the workspace, the cache
  // layer has another geometry, the batch holds a sequence twice, a sequence is unknown or
  // finished, a sequence would pass the cache's capacity, the pool lacks the pages the call
  // takes, or x holds a value that is not finite or beyond x_limit() (either would poison the
  // sequence's cache).
  status forward(cache_type& cache, int layer, std::span<const sequence_tokens> batch,
                 tensor_view<const float, 2> x, tensor_view<float, 2> out, std::span<std::byte> ws) const {
    DSV4_TRY(check_call(cache, layer, batch, x, out, ws));
    workspace_layout l{ws.data()};
    const buffers b = carve(l, cache.capacity());
    // The call's rows in chunks of up to chunk_rows, whatever sequences they belong to. Walking
    // the batch: entry `e` holds the next row to place, `done` of its rows are placed already.
    std::size_t e = 0;
    index_t done = 0;
    for (index_t r0 = 0; r0 < x.extent(0); r0 += chunk_rows) {
      const index_t n = std::min(chunk_rows, x.extent(0) - r0);
      // The chunk's segments: the runs of its rows that belong to one sequence. A sequence's
      // earlier rows went through the cache in earlier chunks, so its length is where it resumes.
      index_t count = 0;
      for (index_t r = 0; r < n; ++count) {
        while (batch[e].tokens == done) {  // entries with no rows left (or none at all)
          ++e;
          done = 0;
        }
        const index_t rows = std::min(n - r, batch[e].tokens - done);
        b.segments[static_cast<std::size_t>(count)] = {batch[e].seq, r, rows,
                                                       *cache.tokens(batch[e].seq, layer)};
        r += rows;
        done += rows;
      }
      DSV4_TRY(run_chunk(cache, layer, b.segments.first(static_cast<std::size_t>(count)), b,
                         x.slice(r0, r0 + n), out.slice(r0, r0 + n)));
    }
    return {};
  }
  // The same with a workspace allocated for the call (convenient; engines pass their own).
  status forward(cache_type& cache, int layer, std::span<const sequence_tokens> batch,
                 tensor_view<const float, 2> x, tensor_view<float, 2> out) const {
    const std::size_t need = workspace_bytes(cache.capacity());
    if (need == SIZE_MAX) return check_workspace({}, need);
    std::unique_ptr<std::byte[], aligned_delete> ws(
        static_cast<std::byte*>(::operator new[](need, std::align_val_t{64}, std::nothrow)));
    if (!ws) return {errc::out_of_range, "workspace: cannot allocate " + std::to_string(need) + " bytes"};
    return forward(cache, layer, batch, x, out, {ws.get(), need});
  }
  // One sequence: every row of x.
  status forward(cache_type& cache, int layer, sequence_id seq, tensor_view<const float, 2> x,
                 tensor_view<float, 2> out) const {
    const sequence_tokens b{seq, x.extent(0)};
    return forward(cache, layer, std::span<const sequence_tokens>(&b, 1), x, out);
  }

  const rope_table& rope() const { return rope_; }

 private:
  using key_codec = typename cache_type::codecs::key;
  using linear_matrix = weight_matrix_for<S.linear_format>;
  using other_matrix = weight_matrix_for<S.other_format>;
  static constexpr bool released = rounds_activations(Num);  // released's roundings (::released, ::fast)

  struct aligned_delete {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };

  // Rows [row, row + rows) of a chunk: tokens of sequence seq at positions t0, t0 + 1, ...
  struct segment {
    sequence_id seq;
    index_t row, rows, t0;
  };

  // The workspace: a chunk's projections and the per-token buffers (one layout for the size query
  // and the carving).
  struct buffers {
    std::span<segment> segments;         // (chunk_rows) the sequences of a chunk's rows
    tensor_view<float, 2> x_act, x_fp8;  // (chunk_rows, d) released numerics: x and a linear's input
    tensor_view<float, 2> qr, qr_fp8;    // (chunk_rows, d_c)
    tensor_view<float, 2> q, o;          // (chunk_rows, n_h * c)
    tensor_view<float, 2> kv;            // (chunk_rows, c)
    tensor_view<float, 2> compressor;    // (chunk_rows, 2 * coff * c) kv and gate projections
    tensor_view<float, 2> indexer;       // (chunk_rows, 2 * coff * c_I + n_I * c_I + n_I)
    tensor_view<float, 2> u, u_fp8;      // (chunk_rows, g * d_g)
    std::span<float> entry;              // (max(c, c_I)) one compressed entry or key
    std::span<float> lanes;              // (chunk_rows, widest projection input) a GEMM's x in lane order
    attend_buffers<S, P> attend;
  };
  static buffers carve(workspace_layout& l, index_t capacity) {
    const index_t n = chunk_rows, hc = dims::heads * dims::c, gd = dims::groups * dims::d_g;
    constexpr compressor_shape cs = dims::compressor;
    constexpr indexer_shape is = dims::indexer;
    const auto matrix = [&](index_t rows, index_t cols) {
      return tensor_view<float, 2>(l.take<float>(rows * cols), {rows, cols});
    };
    buffers b;
    b.segments = l.take_span<segment>(n);
    if constexpr (released) {
      b.x_act = matrix(n, dims::d);
      b.x_fp8 = matrix(n, dims::d);
      b.qr_fp8 = matrix(n, dims::d_c);
      b.u_fp8 = matrix(n, gd);
    }
    b.qr = matrix(n, dims::d_c);
    b.q = matrix(n, hc);
    b.o = matrix(n, hc);
    b.kv = matrix(n, dims::c);
    if constexpr (dims::ratio > 0) b.compressor = matrix(n, 2 * cs.channels());
    if constexpr (dims::top_k > 0) b.indexer = matrix(n, 2 * is.keys.channels() + is.q_width() + is.n_heads);
    b.u = matrix(n, gd);
    b.entry = l.take_span<float>(std::max<index_t>(dims::c, S.index_head_dim));
    b.lanes = l.take_span<float>(n * std::max({dims::d, dims::d_c, hc / dims::groups, gd}));
    const kv_layer_geometry g = geometry(capacity);
    b.attend = attend_buffers<S, P>::carve(l, g.window, g.ratio > 0 ? capacity / g.ratio : 0);
    return b;
  }

  attention(const weights& w, const config::model_params& p, float x_limit)
      : w_(w),
        rope_(rope_table::for_layer(p, S.rope_dim, P::yarn_rope)),
        eps_(p.rms_norm_eps),
        x_limit_(x_limit) {}

  // x_limit() of weights w: 2^56 over the largest row sum of |w| of the matrices that feed the
  // cache, whose values (and those of the vectors beside them) must be finite. One read of those
  // matrices.
  static result<float> cache_input_limit(const weights& w) {
    double most = 0.0;
    const auto matrix = [&](const auto& m, const char* name) -> status {
      const double sum = max_row_abs_sum(m);
      if (!std::isfinite(sum))
        return {errc::invalid_argument,
                std::string(name) + " holds a value that is not finite (it feeds the KV cache)"};
      most = std::max(most, sum);
      return {};
    };
    const auto vector = [](tensor_view<const float, 1> v, const char* name) -> status {
      for (index_t i = 0; i < v.extent(0); ++i)
        if (!std::isfinite(v(i)))
          return {errc::invalid_argument,
                  std::string(name) + " holds a value that is not finite (it feeds the KV cache)"};
      return {};
    };
    const auto compressor = [&](const compressor_weights<other_matrix>& c, const char* wkv, const char* wgate,
                                const char* ape, const char* norm) -> status {
      DSV4_TRY(matrix(c.wkv, wkv));
      DSV4_TRY(matrix(c.wgate, wgate));
      for (index_t i = 0; i < c.ape.extent(0); ++i)
        DSV4_TRY(vector(tensor_view<const float, 1>(&c.ape(i, 0), {c.ape.extent(1)}), ape));
      return vector(c.norm, norm);
    };
    DSV4_TRY(matrix(w.wkv, "attn.wkv"));
    DSV4_TRY(vector(w.kv_norm, "attn.kv_norm.weight"));
    if constexpr (dims::ratio > 0)
      DSV4_TRY(compressor(w.compressor, "attn.compressor.wkv", "attn.compressor.wgate", "attn.compressor.ape",
                          "attn.compressor.norm.weight"));
    if constexpr (dims::top_k > 0)
      DSV4_TRY(compressor(w.indexer.compressor, "attn.indexer.compressor.wkv",
                          "attn.indexer.compressor.wgate", "attn.indexer.compressor.ape",
                          "attn.indexer.compressor.norm.weight"));
    constexpr double bound = 0x1p56;
    return most > 0.0 ? static_cast<float>(bound / most) : std::numeric_limits<float>::max();
  }

  static status check_weights(const weights& w) {
    DSV4_TRY(check_matrix(w.wq_a, dims::d_c, dims::d, "attn.wq_a"));
    DSV4_TRY(check_shape(w.q_norm, {dims::d_c}, "attn.q_norm.weight"));
    DSV4_TRY(check_matrix(w.wq_b, dims::heads * dims::c, dims::d_c, "attn.wq_b"));
    DSV4_TRY(check_matrix(w.wkv, dims::c, dims::d, "attn.wkv"));
    DSV4_TRY(check_shape(w.kv_norm, {dims::c}, "attn.kv_norm.weight"));
    DSV4_TRY(
        check_matrix(w.wo_a, dims::groups * dims::d_g, dims::heads * dims::c / dims::groups, "attn.wo_a"));
    if (std::same_as<linear_matrix, fp8_matrix> && dims::d_g % fp8_block != 0)
      return {errc::invalid_argument,
              "attn.wo_a: FP8 groups need o_lora_rank a multiple of 128 (whole scale blocks)"};
    DSV4_TRY(check_matrix(w.wo_b, dims::d, dims::groups * dims::d_g, "attn.wo_b"));
    DSV4_TRY(check_shape(w.attn_sink, {dims::heads}, "attn.attn_sink"));
    DSV4_TRY(check_contiguous(w.q_norm, "attn.q_norm.weight"));
    DSV4_TRY(check_contiguous(w.kv_norm, "attn.kv_norm.weight"));
    if (dims::ratio > 0)
      DSV4_TRY(check_compressor(dims::compressor, w.compressor, dims::d, "attn.compressor"));
    if (dims::top_k > 0) DSV4_TRY(check_indexer(dims::indexer, w.indexer, dims::d, dims::d_c));
    return {};
  }

  status check_call(const cache_type& cache, int layer, std::span<const sequence_tokens> batch,
                    tensor_view<const float, 2> x, tensor_view<float, 2> out, std::span<std::byte> ws) const {
    DSV4_TRY(check_shape(x, {any_extent, dims::d}, "x"));
    DSV4_TRY(check_shape(out, {x.extent(0), dims::d}, "out"));
    DSV4_TRY(check_contiguous(x, "x"));
    DSV4_TRY(check_contiguous(out, "out"));
    const tensor_view<const std::byte, 1> ws_view(ws.data(), {static_cast<index_t>(ws.size())});
    if (overlaps(out, x) || overlaps(out, ws_view) || overlaps(x, ws_view))
      return {errc::invalid_argument, "out, x and the workspace must not overlap"};
    DSV4_TRY(check_workspace(ws, workspace_bytes(cache.capacity())));
    DSV4_TRY(cache.check_layer(layer));
    if (cache.geometry(layer) != geometry(cache.capacity()))
      return {errc::invalid_argument, "kv_cache layer " + std::to_string(layer) +
                                          " was not made for a layer of policy " + std::string(P::name)};
    if (static_cast<index_t>(batch.size()) > cache.max_sequences())
      return {errc::out_of_range, "batch: " + std::to_string(batch.size()) + " sequences, the cache holds " +
                                      std::to_string(cache.max_sequences())};
    index_t rows = 0, pages = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const sequence_tokens& b = batch[i];
      DSV4_TRY(cache.check_open(b.seq));
      for (std::size_t j = 0; j < i; ++j)
        if (batch[j].seq == b.seq)
          return {errc::invalid_argument, "batch: a sequence appears twice (entries " + std::to_string(j) +
                                              " and " + std::to_string(i) + ")"};
      if (b.tokens < 0)
        return {errc::invalid_argument, "batch entry " + std::to_string(i) + ": negative token count"};
      const index_t at = *cache.tokens(b.seq, layer);
      if (b.tokens > cache.capacity() - at)
        return {errc::out_of_range, "batch entry " + std::to_string(i) + ": " + std::to_string(b.tokens) +
                                        " tokens from position " + std::to_string(at) +
                                        " pass the cache capacity " + std::to_string(cache.capacity())};
      if (!checked_add(rows, b.tokens, rows)) return {errc::out_of_range, "batch: the token counts overflow"};
      pages += cache.pages_to_append(layer, b.seq, b.tokens);
    }
    if (rows != x.extent(0))
      return {errc::shape_mismatch, "x: " + std::to_string(x.extent(0)) + " rows for a batch of " +
                                        std::to_string(rows) + " tokens"};
    if (pages > cache.free_pages()) return cache.pool_exhausted(pages, cache.free_pages());
    // A value that is not finite, or one large enough for a projection to overflow, would put
    // values that are not finite into the sequence's cache and every later output of it: one
    // read of x, before anything is written.
    index_t r = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const index_t at = *cache.tokens(batch[i].seq, layer);
      for (index_t k = 0; k < batch[i].tokens; ++k, ++r) {
        const float* xr = x.data() + r * dims::d;
        const float* bad =
            std::find_if(xr, xr + dims::d, [&](float v) { return !(std::fabs(v) <= x_limit_); });
        if (bad == xr + dims::d) continue;
        const std::string where = "x: row " + std::to_string(r) + " (layer " + std::to_string(layer) +
                                  ", batch entry " + std::to_string(i) + ", position " +
                                  std::to_string(at + k) + ")";
        if (!std::isfinite(*bad))
          return {errc::invalid_argument, where + " holds a value that is not finite"};
        return {errc::invalid_argument, where + " holds " + std::to_string(*bad) +
                                            ", beyond the layer's x_limit() " + std::to_string(x_limit_) +
                                            " (its key projections could overflow)"};
      }
    }
    return {};
  }

  template <class T>
  static std::span<T> row(tensor_view<T, 2> v, index_t i) {
    return {&v(i, 0), static_cast<std::size_t>(v.extent(1))};
  }
  static std::span<const float> view_span(tensor_view<const float, 1> v) {
    return {v.data(), static_cast<std::size_t>(v.extent(0))};
  }
  // The first n rows of a workspace matrix.
  static tensor_view<float, 2> rows_of(tensor_view<float, 2> m, index_t n) { return m.slice(0, n); }
  // Under released numerics, every row of y as a BF16 activation (a linear's or a norm's output).
  static void to_activation_rows(tensor_view<float, 2> y) {
    if constexpr (released)
      for (index_t i = 0; i < y.extent(0); ++i) to_activation(Num, row(y, i));
  }
  // A copy of x in `copy` with f applied to each of its rows.
  template <class F>
  static tensor_view<const float, 2> rows_copy(tensor_view<float, 2> copy, tensor_view<const float, 2> x,
                                               F f) {
    const tensor_view<float, 2> r = rows_of(copy, x.extent(0));
    for (index_t i = 0; i < x.extent(0); ++i) {
      std::copy_n(&x(i, 0), x.extent(1), &r(i, 0));
      f(row(r, i));
    }
    return r;
  }
  // x as a linear with weights W reads it: under released numerics and for FP8/FP4 weights, a
  // copy FP8-simulated in 1 x 128 tiles (to_linear_input); x itself otherwise (FP4 weights under
  // numerics::fast quantize it in the linear).
  template <weight_matrix W>
  static tensor_view<const float, 2> linear_input(tensor_view<float, 2> copy, tensor_view<const float, 2> x) {
    if constexpr (!takes_fp8_simulated_input<W>(Num)) return x;
    return rows_copy(copy, x, [](std::span<float> r) { to_linear_input(Num, true, r); });
  }

  // n consecutive rows of the call, of one sequence or several (segs, in row order): projections
  // as GEMMs over all n rows, then the rows through the cache in order, each at its sequence's
  // position, then the output projections as GEMMs. A row's projections do not depend on the other
  // rows (core/linear_op.hpp), so its output is that of its sequence run alone.
  status run_chunk(cache_type& cache, int layer, std::span<const segment> segs, const buffers& s,
                   tensor_view<const float, 2> x_in, tensor_view<float, 2> y) const {
    const index_t n = x_in.extent(0), c = dims::c, hc = dims::heads * c;
    constexpr compressor_shape cs = dims::compressor;
    constexpr indexer_shape is = dims::indexer;
    // Released numerics: x is the BF16 output of attn_norm.
    tensor_view<const float, 2> x = x_in;
    if constexpr (released) x = rows_copy(s.x_act, x_in, [](std::span<float> r) { to_activation(Num, r); });
    const tensor_view<const float, 2> x_lin = linear_input<linear_matrix>(s.x_fp8, x);

    // Query path: the latent qr is shared with the indexer.
    const tensor_view<float, 2> qr = rows_of(s.qr, n), q = rows_of(s.q, n);
    DSV4_TRY(project(w_.wq_a, x_lin, qr, s.lanes, Num));
    to_activation_rows(qr);
    for (index_t i = 0; i < n; ++i) rms_norm(row(qr, i), view_span(w_.q_norm), eps_, row(qr, i));
    to_activation_rows(qr);
    const tensor_view<const float, 2> qr_lin = linear_input<linear_matrix>(s.qr_fp8, qr);
    DSV4_TRY(project(w_.wq_b, qr_lin, q, s.lanes, Num));
    to_activation_rows(q);
    // KV path, and the projections of the compressors and of the indexer query.
    const tensor_view<float, 2> kv = rows_of(s.kv, n);
    DSV4_TRY(project(w_.wkv, x_lin, kv, s.lanes, Num));
    to_activation_rows(kv);
    tensor_view<float, 2> ckv, cgate, kkv, kgate, iq, iw;
    if constexpr (dims::ratio > 0) {
      const index_t width = 2 * cs.channels();
      ckv = {s.compressor.data(), {n, cs.channels()}, {width, 1}};
      cgate = {s.compressor.data() + cs.channels(), {n, cs.channels()}, {width, 1}};
      DSV4_TRY(project(w_.compressor.wkv, x, ckv, s.lanes));
      DSV4_TRY(project(w_.compressor.wgate, x, cgate, s.lanes));
    }
    if constexpr (dims::top_k > 0) {
      const index_t kc = is.keys.channels(), width = 2 * kc + is.q_width() + is.n_heads;
      float* all = s.indexer.data();
      kkv = {all, {n, kc}, {width, 1}};
      kgate = {all + kc, {n, kc}, {width, 1}};
      iq = {all + 2 * kc, {n, is.q_width()}, {width, 1}};
      iw = {all + 2 * kc + is.q_width(), {n, is.n_heads}, {width, 1}};
      DSV4_TRY(project(w_.indexer.compressor.wkv, x, kkv, s.lanes));
      DSV4_TRY(project(w_.indexer.compressor.wgate, x, kgate, s.lanes));
      DSV4_TRY(project(w_.indexer.wq_b, qr_lin, iq, s.lanes, Num));  // indexer_query rounds both to BF16
      // x as weights_proj reads it: x_lin again when both formats take the same input.
      DSV4_TRY(project(
          w_.indexer.weights_proj,
          takes_fp8_simulated_input<other_matrix>(Num) == takes_fp8_simulated_input<linear_matrix>(Num)
              ? x_lin
              : linear_input<other_matrix>(s.x_fp8, x),
          iw, s.lanes, Num));
    }

    const tensor_view<float, 2> o = rows_of(s.o, n);
    for (const segment& g : segs) {
      for (index_t k = 0; k < g.rows; ++k) {
        const index_t i = g.row + k, t = g.t0 + k;
        const tensor_view<float, 2> qh(&q(i, 0), {dims::heads, c}), oh(&o(i, 0), {dims::heads, c});
        for (index_t h = 0; h < dims::heads; ++h) {
          if constexpr (released) {
            released_head_norm(row(qh, h), eps_);
          } else {
            rms_norm(row(qh, h), {}, eps_, row(qh, h));
          }
        }
        rope_.apply_rows(qh, t);
        to_activation_rows(qh);
        DSV4_TRY(token(cache, layer, g.seq, s, t, row(kv, i), ckv, cgate, kkv, kgate, iq, iw, i, qh, oh));
      }
    }

    // Grouped low-rank output: group j (n_h/g consecutive heads) through its own wo_a block.
    const index_t in_g = hc / dims::groups;
    const tensor_view<float, 2> u = rows_of(s.u, n);
    for (index_t j = 0; j < dims::groups; ++j)
      DSV4_TRY(project(w_.wo_a.slice_rows(j * dims::d_g, (j + 1) * dims::d_g),
                       tensor_view<const float, 2>(o.data() + j * in_g, {n, in_g}, {hc, 1}),
                       tensor_view<float, 2>(u.data() + j * dims::d_g, {n, dims::d_g}, {u.extent(1), 1}),
                       s.lanes));
    to_activation_rows(u);
    DSV4_TRY(project(w_.wo_b, linear_input<linear_matrix>(s.u_fp8, u), y, s.lanes, Num));
    to_activation_rows(y);
    return {};
  }

  // Token t (row i of the chunk's projections): cache writes, candidate selection, attention.
  status token(cache_type& cache, int layer, sequence_id seq, const buffers& s, index_t t,
               std::span<float> kv_t, tensor_view<float, 2> ckv, tensor_view<float, 2> cgate,
               tensor_view<float, 2> kkv, tensor_view<float, 2> kgate, tensor_view<float, 2> iq,
               tensor_view<float, 2> iw, index_t i, tensor_view<const float, 2> q,
               tensor_view<float, 2> o) const {
    const sequence_view v = cache.view(layer, seq);
    const index_t c = dims::c;
    // KV path: one shared key = value latent into the window ring.
    rms_norm(kv_t, view_span(w_.kv_norm), eps_, kv_t);
    to_activation(Num, kv_t);
    rope_.apply(kv_t, t);
    to_activation(Num, kv_t);
    cache.write_row(layer, seq, index_math::ring_slot(t, v.ring), kv_t.data());

    // Long-range branch: both compressors close their blocks on the same token.
    const std::span<float> entry = s.entry;
    if constexpr (dims::ratio > 0) {
      const index_t e = index_math::entry_of<index_t>(t, dims::ratio);  // the entry this token's block makes
      if (v.main.step(w_.compressor, rope_, eps_, t, row(ckv, i), row(cgate, i), entry.first(c), Num))
        cache.write_row(layer, seq, index_math::entry_row(e, v.ring), entry.data());
      if constexpr (dims::top_k > 0) {
        if (v.index.step(w_.indexer.compressor, rope_, eps_, t, row(kkv, i), row(kgate, i),
                         entry.first(S.index_head_dim), Num))
          cache.write_key(layer, seq, e, entry.data());
      }
    }
    cache.advance(layer, seq);

    tensor_view<float, 2> q_i;
    std::span<float> w_i;
    if constexpr (dims::top_k > 0) {
      q_i = {&iq(i, 0), {S.index_n_heads, S.index_head_dim}};
      w_i = row(iw, i);
      indexer_query(dims::indexer, rope_, t, key_codec::rotated, q_i, w_i, Num);
    }
    DSV4_TRY((attend_cached<S, P, Num>(v, s.attend, t, q, q_i, w_i, w_.attn_sink, o)));
    // Values carry absolute rotation; rotating the output by -t leaves each entry at s - t.
    rope_.apply_rows(o, t, /*inverse=*/true);
    to_activation(Num, std::span<float>(o.data(), static_cast<std::size_t>(o.size())));
    return {};
  }

  weights w_;
  rope_table rope_;
  float eps_;
  float x_limit_;
};

// The layer P makes of model config C (validated first).
template <config::model_config C, attention_policy P, numerics Num = numerics::exact>
using attention_layer = attention<shape_of<C>, P, Num>;

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
