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
// The per-sequence state is the reference's decode state (spec §6.4): (coff*m, coff*c) kv and
// score rows (score = gate + ape), token t writing row (overlap ? m : 0) + t mod m. Prefill feeds
// the same state token by token, so decoding one token at a time and prefilling a whole sequence
// compute every entry with identical arithmetic. Entry s is visible to query t iff
// s < floor((t+1)/m): the token that closes a block already sees the block's entry.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/core/gemv.hpp"
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
// projections in the format W of core/gemv.hpp (BF16 in the released checkpoints).
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

// The not-yet-compressed tail of one sequence: what a decode step needs besides the entries.
class compressor_state {
 public:
  compressor_state() = default;
  explicit compressor_state(const compressor_shape& s)
      : shape_(s), kv_(static_cast<std::size_t>(s.rows() * s.channels())), score_(kv_.size()) {
    reset();
  }

  void reset() {
    std::fill(kv_.begin(), kv_.end(), 0.0f);
    std::fill(score_.begin(), score_.end(), -std::numeric_limits<float>::infinity());
  }

  const compressor_shape& shape() const { return shape_; }

  // Feeds the token at position t (tokens are fed in order from 0, or from a reset), given its
  // projections kv = wkv x and gate = wgate x (coff*dim each). When the token closes a block,
  // writes the block's entry (dim), entry number t / ratio, and returns true. Under
  // numerics::released the pooled fp32 entry is cast to BF16 before its norm, and the norm's and
  // RoPE's results are BF16 (spec §6.2 step 4, §18.3); the pooling itself runs in fp32 either way.
  template <weight_matrix W>
  bool step(const compressor_weights<W>& w, const rope_table& rope, float eps, index_t t,
            std::span<const float> kv, std::span<const float> gate, std::span<float> entry,
            numerics num = numerics::exact) {
    const int m = shape_.ratio, ch = shape_.channels();
    const index_t r = t % m;
    const index_t row = (shape_.overlap ? m : 0) + r;
    std::copy(kv.begin(), kv.begin() + ch, kv_.begin() + row * ch);
    for (int c = 0; c < ch; ++c) score_[static_cast<std::size_t>(row * ch + c)] = gate[c] + w.ape(r, c);
    if (r != m - 1) return false;
    pool(entry);
    to_activation(num, entry);
    rms_norm(entry, {w.norm.data(), static_cast<std::size_t>(shape_.dim)}, eps, entry);
    to_activation(num, entry);
    rope.apply(entry, t - r);
    to_activation(num, entry);
    // The closed window becomes the previous one of the next entry.
    if (shape_.overlap) {
      std::copy(kv_.begin() + m * ch, kv_.end(), kv_.begin());
      std::copy(score_.begin() + m * ch, score_.end(), score_.begin());
    }
    return true;
  }

 private:
  // entry[c] = sum_rows softmax_rows(score[:, c]) * kv[:, c] over the channel's rows: in the
  // overlapping form the previous window's first half and the current window's second half.
  void pool(std::span<float> entry) const {
    const int m = shape_.ratio, ch = shape_.channels(), dim = shape_.dim;
    for (int c = 0; c < dim; ++c) {
      float mx = -std::numeric_limits<float>::infinity();
      const auto at = [&](int row) {  // (row, channel) of the pooled stack
        const int channel = shape_.overlap && row >= m ? dim + c : c;
        return static_cast<std::size_t>(row * ch + channel);
      };
      for (int row = 0; row < shape_.rows(); ++row) mx = std::max(mx, score_[at(row)]);
      float sum = 0.0f, acc = 0.0f;
      for (int row = 0; row < shape_.rows(); ++row) {
        const float e = std::exp(score_[at(row)] - mx);
        sum += e;
        acc += e * kv_[at(row)];
      }
      entry[static_cast<std::size_t>(c)] = acc / sum;
    }
  }

  compressor_shape shape_{};
  std::vector<float> kv_;     // (rows, channels)
  std::vector<float> score_;  // (rows, channels) gate + ape; -inf where no token was written
};

// Compressed entries query t may attend to: s < floor((t+1)/m).
constexpr index_t visible_entries(index_t t, int ratio) { return (t + 1) / ratio; }

}  // namespace dsv4::attn
