// KV compressors of CSA and HCA (spec §6): one entry per `ratio` tokens, pooled with a per-channel
// softmax gate.
//
// Overlapping form (CSA, ratio 4, and the indexer's key compressor): each token projects to 2c
// channels. In CHECKPOINT order (spec §6.2, §16.6) the first c channels are the series the token
// lends to the NEXT window (the paper's C^b) and the last c channels the series of its OWN window
// (C^a), and the same split holds for wgate and ape. Entry i pools the 2m rows
// [window i-1, first c channels ; window i, last c channels], so it sees 2m tokens with stride m;
// window -1 is absent (score -inf). Non-overlapping form (HCA, ratio 128, or any ratio): the m
// rows of the window, all c channels. Then RMSNorm with compressor.norm and RoPE at the block
// start i*m.
//
// The per-sequence state holds what the reference's decode state holds (spec §6.4): the kv and
// score rows (score = gate + ape) of the last coff*m tokens, kept by position. Prefill feeds the
// same state token by token, so decoding one token at a time and prefilling a whole sequence
// compute every entry with identical arithmetic. Entry s is visible to query t iff
// s < floor((t+1)/m): the token that closes a block already sees the block's entry.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>

#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

struct compressor_shape {
  int ratio = 0;         // tokens per entry (m)
  int dim = 0;           // entry width (c)
  bool overlap = false;  // 2m-token windows with stride m (2c projected channels)

  constexpr int coff() const { return overlap ? 2 : 1; }
  constexpr int rows() const { return coff() * ratio; }    // state rows
  constexpr int channels() const { return coff() * dim; }  // projected channels per token
};

// Views of one compressor's parameters (checkpoint names compressor.{wkv,wgate,ape,norm}); the two
// projections in the format W of core/weight_matrix.hpp (BF16 in the released checkpoints).
template <weight_matrix W = f32_matrix>
struct compressor_weights {
  W wkv;                             // (coff*dim, d)
  W wgate;                           // (coff*dim, d)
  tensor_view<const float, 2> ape;   // (ratio, coff*dim) learned position bias B
  tensor_view<const float, 1> norm;  // (dim)
};

template <weight_matrix W>
status check_compressor(const compressor_shape& s, const compressor_weights<W>& w, index_t d_model,
                        const std::string& name) {
  if (s.ratio <= 0 || s.dim <= 0) return {errc::invalid_argument, name + ": ratio and dim must be positive"};
  const index_t ch = s.channels();
  DSV4_TRY(check_matrix(w.wkv, ch, d_model, name + ".wkv"));
  DSV4_TRY(check_matrix(w.wgate, ch, d_model, name + ".wgate"));
  DSV4_TRY(check_shape(w.ape, {s.ratio, ch}, name + ".ape"));
  DSV4_TRY(check_shape(w.norm, {s.dim}, name + ".norm.weight"));
  DSV4_TRY(check_contiguous(w.norm, name + ".norm.weight"));
  return {};
}

// The not-yet-compressed tail of one sequence: what a decode step needs besides the entries. A
// view of `ring` rows of (kv, score) in memory the cache owns (one fixed area per sequence, no
// allocation): position t lives in row t mod ring. A block's entry pools the rows of its own
// window (and, overlapping, of the previous one), so ring >= rows() keeps them all; a cache that
// allows truncation by up to H tokens makes ring = rows() + H, so the rows of the block a
// truncated sequence resumes in are still there. Positions before `first` (the first position
// fed since the sequence began or was restored) are absent from every pool, as are negative
// ones; nothing needs resetting, since no row is read before its position was written.
class compressor_state {
 public:
  compressor_state() = default;
  // kv and score: (ring, channels) floats each.
  compressor_state(const compressor_shape& s, index_t ring, float* kv, float* score, index_t first = 0)
      : shape_(s), ring_(ring), kv_(kv), score_(score), first_(first) {}

  // Floats one state of shape s with `ring` rows takes (kv and score).
  static constexpr index_t floats(const compressor_shape& s, index_t ring) { return 2 * ring * s.channels(); }

  const compressor_shape& shape() const { return shape_; }

  // Feeds the token at position t (tokens are fed in order), given its projections kv = wkv x and
  // gate = wgate x (coff*dim each). When the token closes a block, writes the block's entry (dim),
  // entry number t / ratio, and returns true. Under numerics::released the pooled fp32 entry is
  // cast to BF16 before its norm, and the norm's and RoPE's results are BF16 (spec §6.2 step 4,
  // §18.3); the pooling itself runs in fp32 either way.
  template <weight_matrix W>
  bool step(const compressor_weights<W>& w, const rope_table& rope, float eps, index_t t,
            std::span<const float> kv, std::span<const float> gate, std::span<float> entry,
            numerics num = numerics::exact) const {
    const int m = shape_.ratio, ch = shape_.channels();
    const index_t r = index_math::block_offset<index_t>(t, m);
    float* kv_row = row(kv_, t);
    float* score_row = row(score_, t);
    std::copy(kv.begin(), kv.begin() + ch, kv_row);
    for (int c = 0; c < ch; ++c) score_row[c] = gate[c] + w.ape(r, c);
    if (r != m - 1) return false;
    const index_t start = index_math::block_start(index_math::entry_of<index_t>(t, m), index_t{m});
    pool(start, entry);
    to_activation(num, entry);
    rms_norm(entry, {w.norm.data(), static_cast<std::size_t>(shape_.dim)}, eps, entry);
    to_activation(num, entry);
    rope.apply(entry, start);
    to_activation(num, entry);
    return true;
  }

 private:
  float* row(float* base, index_t position) const {
    return base + index_math::ring_slot(position, ring_) * shape_.channels();
  }

  // entry[c] = sum softmax(score[:, c]) * kv[:, c] over the block starting at position `start`:
  // in the overlapping form the previous window's first c channels, then the block's last c
  // channels (the reference's stacking order); absent positions are skipped (their weight would
  // be exp(-inf) = 0, and adding the zero terms first changes no bit).
  void pool(index_t start, std::span<float> entry) const {
    const int m = shape_.ratio, dim = shape_.dim;
    const index_t lo = index_math::pool_begin<index_t>(start, m, shape_.overlap),
                  hi = index_math::pool_end<index_t>(start, m);
    for (int c = 0; c < dim; ++c) {
      const auto channel = [&](index_t p) {
        return index_math::pool_channel<index_t>(p, start, dim, c, shape_.overlap);
      };
      float mx = -std::numeric_limits<float>::infinity();
      for (index_t p = std::max(lo, first_); p < hi; ++p) mx = std::max(mx, row(score_, p)[channel(p)]);
      float sum = 0.0f, acc = 0.0f;
      for (index_t p = std::max(lo, first_); p < hi; ++p) {
        const float e = std::exp(row(score_, p)[channel(p)] - mx);
        sum += e;
        acc += e * row(kv_, p)[channel(p)];
      }
      entry[static_cast<std::size_t>(c)] = acc / sum;
    }
  }

  compressor_shape shape_{};
  index_t ring_ = 0;
  float* kv_ = nullptr;     // (ring, channels)
  float* score_ = nullptr;  // (ring, channels) gate + ape
  index_t first_ = 0;
};

// Compressed entries query t may attend to: s < floor((t+1)/m).
constexpr index_t visible_entries(index_t t, int ratio) {
  return index_math::visible_entries<index_t>(t, ratio);
}

}  // namespace dsv4::attn
