// Interleaved rotary position embedding of DeepSeek-V4 (spec §4.3, §4.4, §18.3).
//
// Every head vector is laid out [nope | rope]; the trailing rope_dim values form rope_dim/2
// complex numbers of adjacent pairs (2i, 2i+1), GPT-J style. SWA-only layers use the plain table
// (theta 10,000); CSA and HCA layers use theta 160,000 with YaRN frequency interpolation and no
// mscale, for queries, window KV, compressed entries and indexer q/k alike. Frequencies and
// angles are computed in fp32 like the reference: at t near 1e6 an fp32 angle has an ulp of about
// 0.06 rad, so a table built in double would rotate differently from the released model.
// The attention output is de-rotated with the inverse rotation at the query position (§4.4).
#pragma once

#include <algorithm>
#include <cmath>
#include <numbers>
#include <span>
#include <vector>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// The rope_dim/2 inverse frequencies of one layer's rotation.
class rope_table {
 public:
  // f_i = theta^(-2i/rope_dim), i = 0 .. rope_dim/2 - 1.
  static rope_table plain(int rope_dim, float theta) {
    DSV4_ASSERT(rope_dim > 0 && rope_dim % 2 == 0, "rope_table: rope_dim must be positive and even");
    rope_table t;
    t.inv_freq_.resize(static_cast<std::size_t>(rope_dim / 2));
    for (int i = 0; i < rope_dim / 2; ++i) {
      const float e = static_cast<float>(2 * i) / static_cast<float>(rope_dim);
      t.inv_freq_[static_cast<std::size_t>(i)] = 1.0f / std::pow(theta, e);
    }
    return t;
  }

  // YaRN frequency interpolation: pairs below the beta_fast correction dimension keep f_i, pairs
  // above the beta_slow one use f_i / factor, a linear ramp joins them. No attention temperature.
  static rope_table yarn(int rope_dim, float theta, float factor, int original_seq_len, float beta_fast,
                         float beta_slow) {
    rope_table t = plain(rope_dim, theta);
    const double dim = rope_dim;
    const auto correction_dim = [&](double rotations) {
      return dim * std::log(original_seq_len / (rotations * 2 * std::numbers::pi)) /
             (2 * std::log(double(theta)));
    };
    const double lo = std::max(std::floor(correction_dim(beta_fast)), 0.0);
    double hi = std::min(std::ceil(correction_dim(beta_slow)), dim - 1);
    if (lo == hi) hi += 0.001;  // a single-pair ramp would divide by zero
    for (std::size_t i = 0; i < t.inv_freq_.size(); ++i) {
      const float ramp = std::clamp(
          (static_cast<float>(i) - static_cast<float>(lo)) / static_cast<float>(hi - lo), 0.0f, 1.0f);
      const float f = t.inv_freq_[i];
      t.inv_freq_[i] = f / factor * ramp + f * (1.0f - ramp);
    }
    return t;
  }

  // The table of a layer: YaRN at compress_rope_theta when the layer compresses (and YaRN is on),
  // plain at rope_theta otherwise.
  static rope_table for_layer(const config::model_params& p, int rope_dim, bool compressed) {
    if (!compressed) return plain(rope_dim, p.rope_theta);
    if (p.yarn_original_seq_len <= 0) return plain(rope_dim, p.compress_rope_theta);
    return yarn(rope_dim, p.compress_rope_theta, p.yarn_factor, p.yarn_original_seq_len, p.yarn_beta_fast,
                p.yarn_beta_slow);
  }

  int rope_dim() const { return static_cast<int>(2 * inv_freq_.size()); }
  std::span<const float> inv_freq() const { return inv_freq_; }

  // Rotates the trailing rope_dim values of x by angle pos * f_i per pair (by -pos * f_i when
  // inverse). (n) -> (n), n >= rope_dim.
  void apply(std::span<float> x, index_t pos, bool inverse = false) const {
    DSV4_ASSERT(x.size() >= 2 * inv_freq_.size(), "rope_table::apply: vector shorter than rope_dim");
    float* r = x.data() + (x.size() - 2 * inv_freq_.size());
    const float t = static_cast<float>(pos);
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      const float angle = t * inv_freq_[i];
      const float c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
      const float a = r[2 * i], b = r[2 * i + 1];
      r[2 * i] = a * c - b * s;
      r[2 * i + 1] = b * c + a * s;
    }
  }

  // apply() on every row of a (rows, n) block, all at the same position.
  void apply_rows(tensor_view<float, 2> x, index_t pos, bool inverse = false) const {
    DSV4_ASSERT(x.stride(1) == 1, "rope_table::apply_rows: rows must be contiguous");
    for (index_t h = 0; h < x.extent(0); ++h)
      apply({&x(h, 0), static_cast<std::size_t>(x.extent(1))}, pos, inverse);
  }

 private:
  std::vector<float> inv_freq_;  // (rope_dim / 2)
};

}  // namespace dsv4::attn
