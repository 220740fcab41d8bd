// The index arithmetic of the kernels: how positions, entries, rows, pages, blocks and lanes turn
// into slots, rows, byte offsets and columns (spec §5, §6.3, §6.4, §8.2, §11.1). Written once, as
// constexpr function templates over the integer type I, so that the CPU kernels, their CUDA twins
// and the proofs of tests/proofs/ instantiate the same source: the kernels with index_t or an
// unsigned type, the proofs with a Z3 integer expression (docs/proofs.md says what is proved).
//
// The functions use only + - * / %, comparisons and select (a conditional a proof can read), so
// that each is a term of integer arithmetic. Every division has a non-negative dividend and a
// positive divisor over the kernels' domain (the proofs check it), where C++'s truncating / and %
// agree with the solver's.
#pragma once

#include "dsv4/core/macros.hpp"

namespace dsv4::index_math {

// c ? a : b (a proof's integer type supplies its own select for a symbolic condition).
template <class I>
DSV4_HOST_DEVICE constexpr I select(bool c, I a, I b) {
  return c ? a : b;
}

// ---- window ring (spec §5): position t lives in ring row t mod ring ------------------------------

template <class I>
DSV4_HOST_DEVICE constexpr I ring_slot(I t, I ring) {
  return t % ring;
}

// ---- compressed entries (spec §6.3, §6.4): entry s pools the block [s m, (s + 1) m) ------------

// The entry the block of position t makes (once its last token is fed).
template <class I>
DSV4_HOST_DEVICE constexpr I entry_of(I t, I ratio) {
  return t / ratio;
}
// Position t's place in its block (the row of the positional bias ape it adds).
template <class I>
DSV4_HOST_DEVICE constexpr I block_offset(I t, I ratio) {
  return t % ratio;
}
// The first position of entry s's block (and the position its RoPE rotates by).
template <class I>
DSV4_HOST_DEVICE constexpr I block_start(I s, I ratio) {
  return s * ratio;
}
// Compressed entries query t may attend to: s < floor((t + 1) / ratio).
template <class I>
DSV4_HOST_DEVICE constexpr I visible_entries(I t, I ratio) {
  return (t + 1) / ratio;
}
// The positions the entry whose block starts at `start` pools: [pool_begin, pool_end), the
// previous block too when overlapping (2m tokens), the block alone otherwise.
template <class I>
DSV4_HOST_DEVICE constexpr I pool_begin(I start, I ratio, bool overlap) {
  return overlap ? start - ratio : start;
}
template <class I>
DSV4_HOST_DEVICE constexpr I pool_end(I start, I ratio) {
  return start + ratio;
}
// The projected channel that pooled channel c reads at position p of that window: overlapping,
// the first `dim` channels (the series a token lends to the next block) before `start` and the
// last `dim` (its own block's series) from `start` on; channel c itself otherwise.
template <class I>
DSV4_HOST_DEVICE constexpr I pool_channel(I p, I start, I dim, I c, bool overlap) {
  return overlap ? select(p < start, c, dim + c) : c;
}
// Row of the sequence's region (ring rows, then compressed entries) that holds entry e.
template <class I>
DSV4_HOST_DEVICE constexpr I entry_row(I e, I ring) {
  return ring + e;
}

// ---- paged regions (attn/kv_codec.hpp's row_region) ---------------------------------------------
// A region of `rows` rows lays out the rows' payloads back to back, then their scale groups. A
// paged region keeps page_rows rows per page: row i is row i mod page_rows of the page in entry
// i / page_rows of its block table, that page at page * page_bytes in the pool.

template <class I>
DSV4_HOST_DEVICE constexpr I page_slot(I row, I page_rows) {
  return row / page_rows;
}
template <class I>
DSV4_HOST_DEVICE constexpr I row_in_page(I row, I page_rows) {
  return row % page_rows;
}
// Whether appending n >= 1 positions whose first lands in ring slot a = ring_slot(t, ring) writes
// a ring row in [lo, hi) (one page of ring rows, 0 <= lo < ring): the rows a, a + 1, ... mod ring,
// n of them, as [a, a + n) when it stays below ring, and [a, ring) then [0, a + n - ring) when it
// wraps (kv_cache::pages_to_append). A truth value (a proof's condition type for symbolic terms).
template <class I>
DSV4_HOST_DEVICE constexpr auto ring_rows_touch(I a, I n, I ring, I lo, I hi) {
  return n >= ring || (a < hi && a + n > lo) || (a + n > ring && a + n - ring > lo);
}
// The first row of the page after row's (kv_cache::pages_to_append steps over the entries one page
// at a time).
template <class I>
DSV4_HOST_DEVICE constexpr I next_page_row(I row, I page_rows) {
  return (row / page_rows + 1) * page_rows;
}
template <class I>
DSV4_HOST_DEVICE constexpr I page_offset(I page, I page_bytes) {
  return page * page_bytes;
}
// Offsets within a region of `rows` rows.
template <class I>
DSV4_HOST_DEVICE constexpr I payload_offset(I row, I payload_bytes) {
  return row * payload_bytes;
}
template <class I>
DSV4_HOST_DEVICE constexpr I scales_offset(I row, I rows, I payload_bytes, I scale_bytes) {
  return rows * payload_bytes + row * scale_bytes;
}
// Offsets in the pool of row `row` of a paged region whose block table is `table` (table[j] the
// page of rows [j page_rows, (j + 1) page_rows)).
template <class I, class Table>
DSV4_HOST_DEVICE constexpr I paged_payload_offset(I row, const Table& table, I page_rows, I page_bytes,
                                                  I payload_bytes) {
  return page_offset(I(table[page_slot(row, page_rows)]), page_bytes) +
         payload_offset(row_in_page(row, page_rows), payload_bytes);
}
template <class I, class Table>
DSV4_HOST_DEVICE constexpr I paged_scales_offset(I row, const Table& table, I page_rows, I page_bytes,
                                                 I payload_bytes, I scale_bytes) {
  return page_offset(I(table[page_slot(row, page_rows)]), page_bytes) +
         scales_offset(row_in_page(row, page_rows), page_rows, payload_bytes, scale_bytes);
}

// ---- the released KV row layouts (spec §8.2; attn/kv_codec.hpp) ---------------------------------
// Main entry: width values, the last `rope` of them RoPE dims: payload = (width - rope) E4M3 codes
// then rope BF16, scale group = one UE8M0 per `tile` NoPE values, padded to 8 bytes.

template <class I>
DSV4_HOST_DEVICE constexpr I latent_payload_bytes(I width, I rope) {
  return (width - rope) + 2 * rope;
}
// Byte of the payload where the BF16 RoPE values start (after the E4M3 codes).
template <class I>
DSV4_HOST_DEVICE constexpr I latent_rope_offset(I width, I rope) {
  return width - rope;
}
template <class I>
DSV4_HOST_DEVICE constexpr I latent_scale_bytes(I width, I rope, I tile) {
  return ((width - rope + tile - 1) / tile + 7) / 8 * 8;
}
// Index key: width E2M1 values two to a byte, then one UE8M0 per `tile` values.
template <class I>
DSV4_HOST_DEVICE constexpr I fp4_key_payload_bytes(I width) {
  return width / 2;
}

// ---- block scales (spec §11.1) ------------------------------------------------------------------

// The block of `block` consecutive elements that element i is in, and the blocks n elements take.
template <class I>
DSV4_HOST_DEVICE constexpr I block_of(I i, I block) {
  return i / block;
}
template <class I>
DSV4_HOST_DEVICE constexpr I blocks_for(I n, I block) {
  return (n + block - 1) / block;
}
// FP8 weights: the scale of (row, col) in a (ceil(out/block), ceil(in/block)) scale matrix whose
// rows are `stride` apart (block x block tiles).
template <class I>
DSV4_HOST_DEVICE constexpr I block_scale_index(I row, I col, I stride, I block) {
  return block_of(row, block) * stride + block_of(col, block);
}
// FP4 weights: the scale of (row, col) in an (out, in/block) scale matrix (1 x block tiles).
template <class I>
DSV4_HOST_DEVICE constexpr I row_scale_index(I row, I col, I stride, I block) {
  return row * stride + block_of(col, block);
}
// Packed FP4 (two E2M1 codes a byte): element col is nibble fp4_nibble(col) (0 low, 1 high) of
// byte fp4_byte(col) — the low nibble holds the even element.
template <class I>
DSV4_HOST_DEVICE constexpr I fp4_byte(I col) {
  return col / 2;
}
template <class I>
DSV4_HOST_DEVICE constexpr I fp4_nibble(I col) {
  return col % 2;
}

// ---- the linear kernels' lane orders (core/weight_lanes.hpp) ------------------------------------
// A chunk of 32 columns sits in four vectors of eight lanes; lane l of vector v holds the column
// below. FP8 (widen_fp8_pow2_lanes): 2l, 2l + 1, 16 + 2l, 17 + 2l. FP4 (decode_fp4_lanes):
// l/4 + 4 (l mod 4) + 0, 2, 16, 18.

template <class I>
DSV4_HOST_DEVICE constexpr I fp8_lane_column(I v, I l) {
  return 16 * (v / 2) + 2 * l + v % 2;
}
template <class I>
DSV4_HOST_DEVICE constexpr I fp4_lane_column(I v, I l) {
  return 16 * (v / 2) + 2 * (v % 2) + 4 * (l % 4) + l / 4;
}

}  // namespace dsv4::index_math
