// Synthesized KV caches for the benchmarks: a sequence declared to hold `tokens` tokens
// (kv_cache::assume_tokens, which takes the pages for their rows) whose rows are then written with
// random values in the cache's format, so that a decode step at a long context is timed without
// feeding the context first.
//
// Only the rows those tokens occupy are written: the window's ring rows, the compressed entries
// and, in indexed layers, the index keys. A sequence's view spans the whole capacity, but its rows
// past the tokens have no page (row_region asserts as much where asserts are on), so writing the
// whole view would write through a page the table does not hold.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dsv4/attn/kv_cache.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4::bench {

// n values uniform in [-1, 1), the same for the same seed.
inline std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

namespace detail {

// Distinct rows a synthesized cache cycles over.
inline constexpr index_t synthesized_rows = 61;

// Rows of one kind, encoded once: synthesized_rows random rows in a contiguous region of Codec, whose bytes
// are copied into the cache (encoding every row of a 1M-token cache would dominate a benchmark's
// set-up).
template <class Codec>
struct encoded_rows {
  static constexpr index_t rows = synthesized_rows;
  index_t width, rope;
  std::vector<std::byte> bytes;
  attn::row_region<Codec> region;

  encoded_rows(index_t w, index_t r, const std::vector<float>& values)
      : width(w),
        rope(r),
        bytes(std::size_t(rows * attn::row_region<Codec>::bytes_per_row(w, r))),
        region{bytes.data(), rows, w, r} {
    for (index_t i = 0; i < rows; ++i) region.write(i, values.data() + i * w);
  }

  // Copies pool row (from + i) mod rows into row at + i of `to`, for i in [0, n); every row
  // written must lie in a page the sequence holds.
  status copy_to(const attn::row_region<Codec>& to, index_t at, index_t n, index_t from) const {
    const auto payload = std::size_t(Codec::payload_bytes(width, rope)),
               scales = std::size_t(Codec::scale_bytes(width, rope));
    for (index_t i = 0; i < n; ++i) {
      if (!to.holds(at + i))
        return {errc::invalid_state,
                "synthesize_kv: row " + std::to_string(at + i) + " is not in a held page"};
      const index_t p = (from + i) % rows;
      std::memcpy(to.payload(at + i), region.payload(p), payload);
      if (scales > 0) std::memcpy(to.scales(at + i), region.scales(p), scales);
    }
    return {};
  }
};

}  // namespace detail

// Declares `tokens` tokens of seq in every layer of the cache and writes random rows into the rows
// they occupy: ring rows [0, min(tokens, ring)), entries ring + [0, tokens / ratio) and, indexed,
// keys [0, tokens / ratio). Rows cycle over 61 random rows (entries and keys at other offsets than
// the ring), so a sequence synthesized twice holds the same bits.
template <attn::kv_shape S>
status synthesize_kv(attn::kv_cache<S>& cache, attn::sequence_id seq, index_t tokens) {
  using cache_t = attn::kv_cache<S>;
  const index_t width = std::max(S.head_dim, S.index_head_dim);
  const std::vector<float> values = random_floats(std::size_t(detail::synthesized_rows * width), 7);
  const detail::encoded_rows<typename cache_t::codecs::entry> entry_pool(S.head_dim, S.rope_dim, values);
  const detail::encoded_rows<typename cache_t::codecs::key> key_pool(S.index_head_dim, 0, values);
  DSV4_TRY(cache.assume_tokens(seq, tokens));
  for (int l = 0; l < cache.layers(); ++l) {
    const typename cache_t::sequence_view v = cache.view(l, seq);
    const attn::kv_layer_geometry g = cache.geometry(l);
    const index_t entries = g.ratio > 0 ? tokens / g.ratio : 0;
    DSV4_TRY(entry_pool.copy_to(v.rows, 0, std::min(tokens, v.ring), 0));
    DSV4_TRY(entry_pool.copy_to(v.rows, v.ring, entries, 17));
    if (g.indexed) DSV4_TRY(key_pool.copy_to(v.keys, 0, entries, 29));
  }
  return {};
}

}  // namespace dsv4::bench
