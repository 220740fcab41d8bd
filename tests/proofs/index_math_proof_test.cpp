// Proofs of the kernels' index arithmetic (core/index_math.hpp) with the Z3 SMT solver: each test
// instantiates the very functions the kernels call with Z3 integer terms (smt.hpp) and proves a
// property for every input within the stated bounds, together with the C++ obligations of the
// terms (no division of a negative number or by zero, no overflow). Each prints `proved` or the
// counterexample. Every kind of property has a negative twin: a deliberately wrong variant of the
// function must give a counterexample, so a proof that cannot fail is caught. docs/proofs.md
// lists what is proved and what is not.
#include <catch2/catch.hpp>

#include <cstdint>
#include <set>
#include <tuple>
#include <vector>

#include "dsv4/attn/kv_cache.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/core/index_math.hpp"
#include "proofs/smt.hpp"

namespace {

using dsv4::index_t;
using dsv4::proofs::cond;
using dsv4::proofs::domain;
using dsv4::proofs::in_range;
using dsv4::proofs::sym;
namespace im = dsv4::index_math;
namespace pf = dsv4::proofs;

constexpr std::int64_t two31 = std::int64_t{1} << 31;

void require_proved(const std::string& name, const cond& premises, const cond& claim) {
  const pf::verdict v = pf::prove(name, premises, claim);
  INFO(name << ":" << v.counterexample);
  REQUIRE(v.proved);
}
// A wrong variant: the solver must find a counterexample (not merely give up).
void require_counterexample(const std::string& name, const cond& premises, const cond& claim) {
  const pf::verdict v = pf::prove(name + " (wrong variant)", premises, claim);
  INFO(name << ":" << v.counterexample);
  REQUIRE(!v.proved);
  REQUIRE(!v.unknown);
}

// ---- the layer geometries of the presets ---------------------------------------------------------

struct compressor_geometry {
  int ratio;
  bool overlap;
  int dim;
  friend auto operator<=>(const compressor_geometry&, const compressor_geometry&) = default;
};
struct row_layout {  // a KV row in the released format: payload and scale bytes
  int width, rope;
  friend auto operator<=>(const row_layout&, const row_layout&) = default;
};

template <dsv4::config::model_config C>
void collect(std::set<compressor_geometry>& compressors, std::set<row_layout>& latents, std::set<int>& keys) {
  constexpr dsv4::attn::shape s = dsv4::attn::shape_of<C>;
  for (const auto kind :
       {dsv4::config::layer_kind::swa, dsv4::config::layer_kind::csa, dsv4::config::layer_kind::hca}) {
    const auto g = dsv4::attn::kv_geometry<s>(kind, two31 - 1);
    if (g.ratio > 0) {
      compressors.insert({g.ratio, g.overlap, s.head_dim});
      if (g.indexed) compressors.insert({g.ratio, g.overlap, s.index_head_dim});
    }
  }
  latents.insert({s.head_dim, s.rope_dim});
  if (s.index_head_dim > 0) keys.insert(s.index_head_dim);
}

struct preset_geometries {
  std::set<compressor_geometry> compressors;
  std::set<row_layout> latents;
  std::set<int> keys;
  preset_geometries() {
    using namespace dsv4::config;
    collect<v4_flash>(compressors, latents, keys);
    collect<v4_pro>(compressors, latents, keys);
    collect<v32>(compressors, latents, keys);
    collect<tiny_swa>(compressors, latents, keys);
    collect<tiny_hybrid>(compressors, latents, keys);
    collect<tiny_v4>(compressors, latents, keys);
    collect<tiny_v4_released>(compressors, latents, keys);
    collect<peer_small_fp8>(compressors, latents, keys);
    collect<peer_small_fp4>(compressors, latents, keys);
  }
};
const preset_geometries& presets() {
  static const preset_geometries g;
  return g;
}

// ---- wrong variants (for the negative tests) ---------------------------------------------------

template <class I>
I ring_slot_off_by_one(I t, I ring) {
  return (t + 1) % ring;
}
template <class I>
I visible_entries_floor_t(I t, I ratio) {
  return t / ratio;
}
template <class I>
I pool_channel_halves_swapped(I p, I start, I dim, I c, bool overlap) {
  return overlap ? select(p < start, dim + c, c) : c;
}
template <class I>
I latent_rope_offset_one_early(I width, I rope) {
  return width - rope - 1;
}
template <class I>
I block_scale_index_transposed(I row, I col, I stride, I block) {
  return im::block_of(col, block) * stride + im::block_of(row, block);
}
template <class I>
I fp4_nibble_of_byte(I col) {
  return (col / 2) % 2;
}
template <class I>
I fp8_lane_column_dropping_a_lane(I v, I l) {
  return 16 * (v / 2) + 2 * (l % 7) + v % 2;
}

// ---- the arithmetic lemma prove() instantiates (smt.hpp) ----------------------------------------------

TEST_CASE("lemma: multiplying by a positive factor is monotone, for all integers", "[proofs]") {
  pf::begin();
  const sym r = sym::var("r"), x = sym::var("x"), y = sym::var("y");
  require_proved("monotone product", pf::truth(), pf::monotone_product(r.expr(), x.expr(), y.expr()));
}

// ---- window ring (spec §5) -------------------------------------------------------------------------

// slot(0) = 0 and each position takes the next slot, cyclically: with the range, this defines
// t mod ring by induction, so the ring is the reference's layout (token t at slot t mod ring).
template <class Slot>
void ring_layout(const std::string& name, Slot slot, bool expect) {
  pf::begin();
  const sym t = sym::var("t"), ring = sym::var("ring");
  const cond premises = in_range(t, 0, two31 - 1) && in_range(ring, 1, two31 + 1);
  const sym s = slot(t, ring), next = slot(t + 1, ring);
  const cond claim =
      in_range(s, 0, ring) && slot(sym(0), ring) == 0 && next == select(s == ring - 1, sym(0), s + 1);
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("window ring: slot below ring, slot 0 first, consecutive positions in consecutive slots",
          "[proofs]") {
  ring_layout(
      "ring layout", [](sym t, sym r) { return im::ring_slot(t, r); }, true);
}
TEST_CASE("window ring, negative: (t + 1) mod ring breaks the layout", "[proofs]") {
  ring_layout(
      "ring layout", [](sym t, sym r) { return ring_slot_off_by_one(t, r); }, false);
}

// Rows `rows` positions back from t (the window, or a compressor's pooled positions) keep distinct
// ring slots, and no position up to t + H (a sequence truncated by up to H tokens re-feeds at most
// that far) writes over one of them, when ring >= rows + H.
void ring_keeps(const std::string& name, std::int64_t ring_shortfall, bool expect, bool truncation) {
  pf::begin();
  const sym t = sym::var("t"), rows = sym::var("rows"), h = sym::var("H"), ring = sym::var("ring");
  const sym p = sym::var("p"), q = sym::var("q");
  cond premises = in_range(t, 0, two31) && in_range(rows, 1, two31) && in_range(ring, 1, two31 * 2) &&
                  ring >= rows + h - sym(ring_shortfall) && in_range(p, 0, t + 1) && p >= t - rows + 1 &&
                  q > p;
  premises = premises && (truncation ? in_range(h, 0, two31) && q <= t + h : h == 0 && q <= t);
  const cond claim = im::ring_slot(q, ring) != im::ring_slot(p, ring);
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("window ring: the window's positions have distinct slots (ring >= window)", "[proofs]") {
  ring_keeps("ring distinct", 0, true, false);
}
TEST_CASE("window ring: truncation by up to H never overwrites a needed row (ring >= window + H)",
          "[proofs]") {
  ring_keeps("ring truncation", 0, true, true);
}
TEST_CASE("window ring, negative: one row short of window + H", "[proofs]") {
  ring_keeps("ring truncation", 1, false, true);
}

// ---- compressed entries (spec §6.3) -----------------------------------------------------------------

// Entry s is visible to query t iff its block is complete at t: (s + 1) m - 1 <= t.
template <class Visible>
void visibility(const std::string& name, Visible visible, bool expect) {
  pf::begin();
  const sym t = sym::var("t"), s = sym::var("s"), m = sym::var("m");
  const cond premises = in_range(t, 0, two31) && in_range(s, 0, two31) && in_range(m, 1, 1 << 20);
  const cond claim = (s < visible(t, m)) == (im::block_start(s + 1, m) - 1 <= t);
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("visibility: s < floor((t + 1) / m) iff the block of s is complete at t", "[proofs]") {
  visibility(
      "visibility", [](sym t, sym m) { return im::visible_entries(t, m); }, true);
}
TEST_CASE("visibility, negative: floor(t / m)", "[proofs]") {
  visibility(
      "visibility", [](sym t, sym m) { return visible_entries_floor_t(t, m); }, false);
}

TEST_CASE(
    "entries: t = block_start(entry_of(t)) + block_offset(t); the entry becomes visible at its last token",
    "[proofs]") {
  pf::begin();
  const sym t = sym::var("t"), m = sym::var("m");
  const cond premises = in_range(t, 0, two31) && in_range(m, 1, 1 << 20);
  const sym e = im::entry_of(t, m), r = im::block_offset(t, m), v = im::visible_entries(t, m);
  const cond claim = in_range(r, 0, m) && im::block_start(e, m) + r == t && v == select(r == m - 1, e + 1, e);
  require_proved("entries", premises, claim);
}

// The positions entry s pools and the channel half each gives, for every preset's compressors:
// [m(s-1), m(s+1)) overlapping, [ms, m(s+1)) otherwise; overlapping, a position feeds its own
// block's entry with the last dim channels and the next block's entry with the first dim.
template <class Channel>
void compressor_windows(const std::string& name, Channel channel, bool expect) {
  for (const compressor_geometry& g : presets().compressors) {
    if (!expect && !g.overlap) continue;
    pf::begin();
    const sym s = sym::var("s"), p = sym::var("p"), c = sym::var("c");
    const sym m = g.ratio, dim = g.dim;
    const sym start = im::block_start(s, m), lo = im::pool_begin(start, m, g.overlap),
              hi = im::pool_end(start, m);
    const cond premises = in_range(s, 0, two31) && in_range(p, 0, two31) && in_range(c, 0, dim);
    const sym ch = channel(p, start, dim, c, g.overlap), e = im::entry_of(p, m);
    const cond inside = in_range(p, lo, hi);
    cond claim = lo == m * (s - (g.overlap ? 1 : 0)) && hi == m * (s + 1);
    if (g.overlap) {
      claim = claim && inside == (s == e || s == e + 1) &&
              implies(inside,
                      in_range(ch, 0, 2 * dim) && (ch == dim + c) == (s == e) && (ch == c) == (s == e + 1));
    } else {
      claim = claim && inside == (s == e) && implies(inside, ch == c);
    }
    const std::string label = name + " m=" + std::to_string(g.ratio) + " dim=" + std::to_string(g.dim) +
                              (g.overlap ? " overlapping" : "");
    if (expect) {
      require_proved(label, premises, claim);
    } else {
      require_counterexample(label, premises, claim);
    }
  }
}

TEST_CASE("compressor: each entry pools its windows, each position's channel halves feed exactly one entry",
          "[proofs]") {
  compressor_windows(
      "compressor windows",
      [](sym p, sym st, sym d, sym c, bool o) { return im::pool_channel(p, st, d, c, o); }, true);
}
TEST_CASE("compressor, negative: channel halves swapped", "[proofs]") {
  compressor_windows(
      "compressor windows",
      [](sym p, sym st, sym d, sym c, bool o) { return pool_channel_halves_swapped(p, st, d, c, o); }, false);
}

// The tail state: when token t closes a block, the pool reads positions [max(lo, 0), t] only, and
// with state rows coff m + H they sit in distinct ring rows that no position up to t + H overwrote.
void compressor_tail(const std::string& name, std::int64_t shortfall, bool expect) {
  for (const compressor_geometry& g : presets().compressors) {
    pf::begin();
    const sym t = sym::var("t"), h = sym::var("H"), ring = sym::var("ring"), p = sym::var("p"),
              q = sym::var("q");
    const sym m = g.ratio, rows = (g.overlap ? 2 : 1) * g.ratio;
    const cond premises = in_range(t, 0, two31) && in_range(h, 0, two31) && in_range(ring, 1, two31 * 2) &&
                          ring >= rows + h - sym(shortfall) && im::block_offset(t, m) == m - 1 &&
                          in_range(q, p + 1, t + h + 1) && p >= 0;
    const sym start = im::block_start(im::entry_of(t, m), m);
    const sym lo = im::pool_begin(start, m, g.overlap), hi = im::pool_end(start, m);
    const cond claim = hi == t + 1 && lo >= t + 1 - rows &&
                       implies(in_range(p, lo, hi), im::ring_slot(q, ring) != im::ring_slot(p, ring));
    const std::string label = name + " m=" + std::to_string(g.ratio) + (g.overlap ? " overlapping" : "");
    if (expect) {
      require_proved(label, premises, claim);
    } else {
      require_counterexample(label, premises, claim);
    }
  }
}

TEST_CASE("compressor tail: a closing token pools only rows the state still holds, truncation included",
          "[proofs]") {
  compressor_tail("compressor tail", 0, true);
}
TEST_CASE("compressor tail, negative: state one row short", "[proofs]") {
  compressor_tail("compressor tail", 1, false);
}

// ---- paged regions (attn/kv_codec.hpp, attn/kv_cache.hpp) --------------------------------------------
// Any geometry: page_rows P, payload and scale bytes, pages of page_bytes >= P (payload + scale),
// a pool of N pages, a region of R rows, block tables given by the premises only.

struct paged_setup {
  sym rows = sym::var("R"), page_rows = sym::var("P"), pb = sym::var("pb"), sb = sym::var("sb"),
      page_bytes = sym::var("page_bytes"), pages = sym::var("N");
  cond premises = in_range(rows, 1, two31 * 2) && in_range(page_rows, 1, 1 << 16) &&
                  in_range(pb, 1, 1 << 20) && in_range(sb, 0, 1 << 12) &&
                  page_bytes >= page_rows * (pb + sb) && in_range(page_bytes, 1, std::int64_t{1} << 40) &&
                  in_range(pages, 1, two31) && pages * page_bytes <= sym(std::int64_t{1} << 62);
};

// [a, a + n) and [b, b + k) share no byte.
cond disjoint(const sym& a, const sym& n, const sym& b, const sym& k) { return a + n <= b || b + k <= a; }

TEST_CASE("paged cache: every row's payload and scales lie in its page and in the pool", "[proofs]") {
  pf::begin(domain::uint64);
  paged_setup g;
  const pf::table table("table");
  const sym i = sym::var("i");
  const sym page = table[im::page_slot(i, g.page_rows)];
  const cond premises = g.premises && in_range(i, 0, g.rows) && in_range(page, 0, g.pages);
  const sym pay = im::paged_payload_offset(i, table, g.page_rows, g.page_bytes, g.pb);
  const sym sc = im::paged_scales_offset(i, table, g.page_rows, g.page_bytes, g.pb, g.sb);
  const sym base = im::page_offset(page, g.page_bytes), end = base + g.page_bytes;
  const cond claim =
      base <= pay && pay + g.pb <= end && base <= sc && sc + g.sb <= end && end <= g.pages * g.page_bytes;
  require_proved("paged bounds", premises, claim);
}

// Two rows i != j of one sequence (its table's pages are distinct) or of two sequences (their pages
// are distinct) never share a byte; a row's payload and scales do not overlap either.
void paged_disjoint(const std::string& name, bool two_sequences, bool expect) {
  pf::begin(domain::uint64);
  paged_setup g;
  const pf::table t1("table"), t2(two_sequences ? "other_table" : "table");
  const sym i = sym::var("i"), j = sym::var("j");
  const sym si = im::page_slot(i, g.page_rows), sj = im::page_slot(j, g.page_rows);
  const cond distinct_pages = two_sequences ? t1[si] != t2[sj] : implies(t1[si] == t2[sj], si == sj);
  const cond premises = g.premises && in_range(i, 0, g.rows) && in_range(j, 0, g.rows) &&
                        (two_sequences ? pf::truth() : i != j) && in_range(t1[si], 0, g.pages) &&
                        in_range(t2[sj], 0, g.pages) && (expect ? distinct_pages : pf::truth());
  const sym pi = im::paged_payload_offset(i, t1, g.page_rows, g.page_bytes, g.pb);
  const sym pj = im::paged_payload_offset(j, t2, g.page_rows, g.page_bytes, g.pb);
  const sym ci = im::paged_scales_offset(i, t1, g.page_rows, g.page_bytes, g.pb, g.sb);
  const sym cj = im::paged_scales_offset(j, t2, g.page_rows, g.page_bytes, g.pb, g.sb);
  const cond claim = disjoint(pi, g.pb, pj, g.pb) && disjoint(ci, g.sb, cj, g.sb) &&
                     disjoint(pi, g.pb, cj, g.sb) && disjoint(ci, g.sb, pj, g.pb) &&
                     disjoint(pi, g.pb, ci, g.sb);
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("paged cache: two rows of one sequence never share a byte", "[proofs]") {
  paged_disjoint("paged rows disjoint", false, true);
}
TEST_CASE("paged cache: rows of two sequences with disjoint pages never share a byte", "[proofs]") {
  paged_disjoint("paged sequences disjoint", true, true);
}
TEST_CASE("paged cache, negative: a table that repeats a page", "[proofs]") {
  paged_disjoint("paged rows disjoint", false, false);
}

// Truncating to n rows keeps the table slots [0, blocks_for(n, P)) (kv_cache::drop_pages): every row
// below n is in a kept slot, every kept slot holds a row below n, every dropped slot none.
TEST_CASE("paged cache: truncation keeps exactly the pages of the rows below n", "[proofs]") {
  pf::begin(domain::uint64);
  paged_setup g;
  const sym i = sym::var("i"), n = sym::var("n"), j = sym::var("j");
  const sym kept = im::blocks_for(n, g.page_rows);
  const cond premises =
      g.premises && in_range(n, 0, g.rows + 1) && in_range(i, 0, g.rows) && in_range(j, 0, kept);
  const cond claim = (im::page_slot(i, g.page_rows) < kept) == (i < kept * g.page_rows) &&
                     implies(i < n, im::page_slot(i, g.page_rows) < kept) && j * g.page_rows < n;
  require_proved("paged truncation", premises, claim);
}

// kv_cache::pages_to_append counts a page of ring rows [lo, lo + P) when ring_rows_touch says that
// appending n positions from position t (first slot a = t mod ring) writes one of its rows. Sound
// (every page written is counted, or the pool could run out mid-write): for every i < n, if row
// (t + i) mod ring lies in the page, the predicate holds. Tight (no page is taken that is not
// written): when it holds, the offset w below (slot lo once the append covers the whole ring;
// max(lo, a) without wrapping; lo after wrapping) is below n and below 2 ring - a, and its row,
// a + w or a + w - ring past the end, lies in the page. That this row is (t + w) mod ring is the
// one step left to arithmetic: the solver gives up on it (a modulus by a symbolic ring).
template <class Touch>
void ring_pages(const std::string& name, Touch touch, bool expect) {
  pf::begin();
  const sym t = sym::var("t"), n = sym::var("n"), ring = sym::var("ring"), lo = sym::var("lo"),
            rows = sym::var("P"), i = sym::var("i");
  const sym hi = lo + rows, a = im::ring_slot(t, ring);
  const cond premises = in_range(t, 0, two31) && in_range(n, 1, two31) && in_range(ring, 1, two31) &&
                        in_range(lo, 0, ring) && in_range(rows, 1, two31) && in_range(i, 0, n);
  const cond touched = touch(a, n, ring, lo, hi);
  const cond sound = implies(in_range(im::ring_slot(t + i, ring), lo, hi), touched);
  if (!expect) {
    require_counterexample(name + " sound", premises, sound);
    return;
  }
  require_proved(name + " sound", premises, sound);
  // Offsets below 2 ring - a, where the row of offset w is a + w, or a + w - ring past the end.
  const sym first = select(lo > a, lo - a, sym(0));  // max(lo, a) - a
  const sym witness = select(n >= ring, select(lo >= a, lo - a, lo - a + ring),
                             select(a < hi && a + n > lo, first, ring - a + lo));
  const sym row = select(a + witness >= ring, a + witness - ring, a + witness);
  require_proved(
      name + " tight", premises,
      implies(touched, in_range(witness, 0, n) && a + witness < 2 * ring && in_range(row, lo, hi)));
}

TEST_CASE("paged cache: pages_to_append counts exactly the ring pages an append writes", "[proofs]") {
  ring_pages(
      "ring pages",
      [](sym a, sym n, sym ring, sym lo, sym hi) { return im::ring_rows_touch(a, n, ring, lo, hi); }, true);
}
TEST_CASE("paged cache, negative: ring pages without the wrapped part", "[proofs]") {
  ring_pages(
      "ring pages",
      [](sym a, sym n, sym ring, sym lo, sym hi) { return n >= ring || (a < hi && a + n > lo); }, false);
}

// ---- released row layouts (spec §8.2) ------------------------------------------------------------------

// One main entry of every preset's width: the E4M3 codes, the BF16 RoPE values and the scale bytes
// of a row, and of two rows of a page of P rows, are pairwise distinct bytes inside the page; at
// V4's 512 = 448 + 64 the entry takes 448 + 128 + 8 = 584 bytes.
template <class RopeOffset>
void latent_layout(const std::string& name, RopeOffset rope_offset, bool expect) {
  for (const row_layout& l : presets().latents) {
    pf::begin();
    constexpr index_t tile = dsv4::attn::fp8_latent_codec::tile;
    const sym width = l.width, rope = l.rope, nope = l.width - l.rope;
    const sym pb = im::latent_payload_bytes(width, rope), sb = im::latent_scale_bytes(width, rope, sym(tile));
    const sym page_rows = sym::var("P"), r1 = sym::var("r1"), r2 = sym::var("r2");
    const sym i = sym::var("i"), j = sym::var("j"), b = sym::var("b"), k = sym::var("k");
    const cond premises = in_range(page_rows, 1, 1 << 20) && in_range(r1, 0, page_rows) &&
                          in_range(r2, 0, page_rows) && in_range(i, 0, nope) && in_range(j, 0, rope) &&
                          in_range(b, 0, 2) && in_range(k, 0, im::blocks_for(nope, sym(tile)));
    // Bytes in the page: code i of row r1, RoPE byte b of value j of row r1 or r2, scale k of r2.
    const auto code = [&](const sym& r, const sym& e) { return im::payload_offset(r, pb) + e; };
    const auto rope_byte = [&](const sym& r) {
      return im::payload_offset(r, pb) + rope_offset(width, rope) + 2 * j + b;
    };
    const auto scale = [&](const sym& r) { return im::scales_offset(r, page_rows, pb, sb) + k; };
    const sym end = page_rows * (pb + sb);
    cond claim = in_range(code(r1, i), 0, end) && in_range(rope_byte(r1), 0, end) &&
                 in_range(scale(r1), 0, end) && code(r1, i) != rope_byte(r2) && code(r1, i) != scale(r2) &&
                 rope_byte(r1) != scale(r2) &&
                 implies(r1 != r2, code(r1, i) != code(r2, i) && rope_byte(r1) != rope_byte(r2) &&
                                       scale(r1) != scale(r2)) &&
                 rope_byte(r1) < im::payload_offset(r1 + 1, pb) && im::block_of(i, sym(tile)) < sb;
    if (l.width == 512 && l.rope == 64) claim = claim && pb + sb == 584 && sb == 8;
    const std::string label = name + " width=" + std::to_string(l.width) + " rope=" + std::to_string(l.rope);
    if (expect) {
      require_proved(label, premises, claim);
    } else {
      require_counterexample(label, premises, claim);
    }
  }
}

TEST_CASE("released entry: E4M3, BF16 and scale fields never overlap and fit the row (584 bytes at V4)",
          "[proofs]") {
  latent_layout(
      "latent layout", [](sym w, sym r) { return im::latent_rope_offset(w, r); }, true);
  // The codec computes its sizes with the same functions.
  STATIC_REQUIRE(dsv4::attn::fp8_latent_codec::payload_bytes(512, 64) +
                     dsv4::attn::fp8_latent_codec::scale_bytes(512, 64) ==
                 584);
}
TEST_CASE("released entry, negative: RoPE values one byte early", "[proofs]") {
  latent_layout(
      "latent layout", [](sym w, sym r) { return latent_rope_offset_one_early(w, r); }, false);
}

// The index key: value i of a width-wide key is nibble fp4_nibble(i) of byte fp4_byte(i) of the
// payload, its scale block_of(i, 32) of the scale bytes: in range and one byte/nibble per value;
// 64 + 4 = 68 bytes at c_I = 128.
TEST_CASE("released index key: values in distinct nibbles, scales in range (68 bytes at c_I = 128)",
          "[proofs]") {
  for (const int w : presets().keys) {
    pf::begin();
    constexpr index_t tile = dsv4::attn::fp4_key_codec::tile;
    const sym width = w, i = sym::var("i"), j = sym::var("j");
    const sym pb = im::fp4_key_payload_bytes(width), sb = im::blocks_for(width, sym(tile));
    const cond premises = in_range(i, 0, width) && in_range(j, 0, width) && i != j;
    cond claim = in_range(im::fp4_byte(i), 0, pb) && in_range(im::block_of(i, sym(tile)), 0, sb) &&
                 (im::fp4_byte(i) != im::fp4_byte(j) || im::fp4_nibble(i) != im::fp4_nibble(j));
    if (w == 128) claim = claim && pb + sb == 68;
    require_proved("index key layout width=" + std::to_string(w), premises, claim);
  }
  STATIC_REQUIRE(dsv4::attn::fp4_key_codec::payload_bytes(128, 0) +
                     dsv4::attn::fp4_key_codec::scale_bytes(128, 0) ==
                 68);
}

// ---- block scales and the FP4 nibble order (spec §11.1) --------------------------------------------

// FP8: (row, col) of an (out, in) matrix, out and in up to 2^24, reads scale (row / 128, col / 128)
// of a (ceil(out / 128), ceil(in / 128)) matrix: in range, and equal exactly for the elements of
// one 128 x 128 block.
template <class Index>
void fp8_block_scales(const std::string& name, Index index, bool expect) {
  pf::begin(domain::uint64);
  const sym out = sym::var("out"), in = sym::var("in"), r1 = sym::var("r1"), c1 = sym::var("c1"),
            r2 = sym::var("r2"), c2 = sym::var("c2");
  const sym block = dsv4::fp8_block, stride = im::blocks_for(in, block);
  const cond premises = in_range(out, 1, 1 << 24) && in_range(in, 1, 1 << 24) && in_range(r1, 0, out) &&
                        in_range(r2, 0, out) && in_range(c1, 0, in) && in_range(c2, 0, in);
  const sym a = index(r1, c1, stride, block), b = index(r2, c2, stride, block);
  const cond claim = in_range(a, 0, im::blocks_for(out, block) * stride) &&
                     (a == b) == (r1 / block == r2 / block && c1 / block == c2 / block);
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("FP8 128x128 block scales: index in range, equal iff same block", "[proofs]") {
  fp8_block_scales(
      "fp8 block scales", [](sym r, sym c, sym s, sym b) { return im::block_scale_index(r, c, s, b); }, true);
}
TEST_CASE("FP8 block scales, negative: transposed index", "[proofs]") {
  fp8_block_scales(
      "fp8 block scales", [](sym r, sym c, sym s, sym b) { return block_scale_index_transposed(r, c, s, b); },
      false);
}

TEST_CASE("FP4 1x32 scales: index in range, equal iff same row and 32-block", "[proofs]") {
  pf::begin(domain::uint64);
  const sym out = sym::var("out"), blocks = sym::var("blocks"), r1 = sym::var("r1"), c1 = sym::var("c1"),
            r2 = sym::var("r2"), c2 = sym::var("c2");
  const sym block = dsv4::fp4_block, in = blocks * block, stride = blocks;
  const cond premises = in_range(out, 1, 1 << 24) && in_range(blocks, 1, 1 << 20) && in_range(r1, 0, out) &&
                        in_range(r2, 0, out) && in_range(c1, 0, in) && in_range(c2, 0, in);
  const sym a = im::row_scale_index(r1, c1, stride, block), b = im::row_scale_index(r2, c2, stride, block);
  const cond claim = in_range(a, 0, out * stride) && (a == b) == (r1 == r2 && c1 / block == c2 / block);
  require_proved("fp4 row scales", premises, claim);
}

// Element col of a packed FP4 row is nibble fp4_nibble(col) of byte fp4_byte(col): a bijection of
// [0, 2n) onto [0, n) x {0, 1}, with the even element in the low nibble (spec §11.1).
template <class Nibble>
void nibble_order(const std::string& name, Nibble nibble, bool expect) {
  pf::begin(domain::uint64);
  const sym n = sym::var("n"), a = sym::var("a"), b = sym::var("b"), byte = sym::var("byte"),
            half = sym::var("half");
  const cond premises = in_range(n, 1, std::int64_t{1} << 40) && in_range(a, 0, 2 * n) &&
                        in_range(b, 0, 2 * n) && in_range(byte, 0, n) && in_range(half, 0, 2);
  const sym c = 2 * byte + half;  // the element the spec puts at (byte, half)
  const cond claim = in_range(im::fp4_byte(a), 0, n) && in_range(nibble(a), 0, 2) &&
                     implies(a != b, im::fp4_byte(a) != im::fp4_byte(b) || nibble(a) != nibble(b)) &&
                     im::fp4_byte(c) == byte && nibble(c) == half;
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("FP4 nibble order: a bijection, low nibble = even element", "[proofs]") {
  nibble_order(
      "fp4 nibbles", [](sym c) { return im::fp4_nibble(c); }, true);
}
TEST_CASE("FP4 nibble order, negative: nibble from the byte index", "[proofs]") {
  nibble_order(
      "fp4 nibbles", [](sym c) { return fp4_nibble_of_byte(c); }, false);
}

// ---- the linear kernels' lane orders (core/weight_lanes.hpp) -----------------------------------------

// (vector, lane) -> column is a bijection of 4 x 8 onto the chunk's 32 columns (injective into
// [0, 32), so onto), and vector v takes its columns from its half v / 2 (the shuffle's operands).
template <class Column>
void lane_map(const std::string& name, Column column, bool expect) {
  pf::begin();
  const sym v1 = sym::var("v1"), l1 = sym::var("l1"), v2 = sym::var("v2"), l2 = sym::var("l2");
  const cond premises = in_range(v1, 0, 4) && in_range(l1, 0, 8) && in_range(v2, 0, 4) && in_range(l2, 0, 8);
  const sym a = column(v1, l1), b = column(v2, l2);
  const cond claim = in_range(a, 16 * (v1 / 2), 16 * (v1 / 2) + 16) && implies(v1 != v2 || l1 != l2, a != b);
  if (expect) {
    require_proved(name, premises, claim);
  } else {
    require_counterexample(name, premises, claim);
  }
}

TEST_CASE("lane orders: FP8 and FP4 lane maps are bijections within their half", "[proofs]") {
  lane_map(
      "fp8 lanes", [](sym v, sym l) { return im::fp8_lane_column(v, l); }, true);
  lane_map(
      "fp4 lanes", [](sym v, sym l) { return im::fp4_lane_column(v, l); }, true);
}
TEST_CASE("lane orders, negative: a lane map that drops a lane", "[proofs]") {
  lane_map(
      "fp8 lanes", [](sym v, sym l) { return fp8_lane_column_dropping_a_lane(v, l); }, false);
}

}  // namespace
