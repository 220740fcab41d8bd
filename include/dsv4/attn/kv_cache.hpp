// kv_cache<S>: the hybrid KV cache of a whole model (or of any list of layers), in pages of a
// pool the engine provides, with rows of kv_shape S (head dims and storage format; spec §6.4, §8).
// kv_cache_for<C> is the cache of model config C, make_model_cache<C> one for every layer of it.
//
// Per sequence and per layer it holds
//   ring rows     the window: position p in ring row p mod ring, ring = window + max_truncate
//                 rounded up to whole pages                                       (entry rows)
//   entries       floor(tokens / ratio) compressed latent rows                   (entry rows)
//   index keys    floor(tokens / ratio) indexer keys, indexed layers only        (key rows)
//   compressors   the fp32 tails of the compressors (compressor.hpp), in a fixed per-sequence area
// Rows live in pages: fixed-size blocks of page_bytes bytes from the pool, each holding a power of
// two of rows of one kind (as many as fit), laid out as a contiguous row_region (payloads, then
// scale groups; kv_codec.hpp). A sequence has one block table per layer: [ring pages | entry pages | key
// pages], -1 where no page is held. The attention layer reads the ring and the entries as one paged region
// (ring rows, then entry e at row ring + e), which the sparse attention core and the indexer address through
// the table. Pages are taken when a row is first written and returned when a sequence is released or
// truncated, so a short sequence holds few pages whatever the capacity.
//
// Sequences: open() takes a free slot and returns a sequence_id (slot + generation, so a released
// id is recognized as stale); finish() stops appends (the rows stay readable until release()).
// fork() makes a new sequence that shares every page of another (reference counts) and copies its
// compressor tails: prefix reuse, beam search and speculative decoding start from a fork. A page
// held by several sequences is copied before any of them writes to it (copy on write), so each
// sequence sees exactly the rows of its own history. truncate() returns a sequence to an earlier
// position, by up to max_truncate tokens (or to 0), after which appending continues exactly as if
// the dropped tokens had never been fed: the ring and the compressor tails keep max_truncate more
// rows than the window and a block need, so nothing the earlier position needs was overwritten.
//
// Every operation checks before it changes anything: a failed call leaves the cache as it was.
// The pool is never over-committed: the attention layer counts the pages a call will take (new
// pages and copies of shared ones, pages_to_append) before its first write.
//
// create() takes the pool as a span of the engine's memory; the convenience create(sequences,
// capacity, layers) and make_model_cache<C>() allocate a pool large enough for every sequence at full
// capacity. sequence_bytes(tokens) is exactly what config::kv_sequence_bytes accounts for the same
// geometry when max_truncate is 0 (the tests check it); pages_for(tokens) is what such a sequence
// holds in pages.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/concepts.hpp"
#include "dsv4/attn/kv_codec.hpp"
#include "dsv4/attn/shape.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/arith.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4::attn {

// What a layer stores per sequence, independent of the arithmetic that fills it.
struct kv_layer_geometry {
  index_t window = 0;    // rows a query attends to, its own included
  int ratio = 0;         // tokens per compressed entry, 0 for none
  bool overlap = false;  // overlapping compressor (2m-token windows)
  bool indexed = false;  // Lightning Indexer keys are stored

  friend constexpr bool operator==(const kv_layer_geometry&, const kv_layer_geometry&) = default;
};

// The geometry policy P needs in a cache of `capacity` tokens per sequence.
template <shape S, attention_policy P>
constexpr kv_layer_geometry kv_geometry(index_t capacity) {
  return {std::min(P::window(S, capacity), capacity), P::compress_ratio(S), P::overlapping(S),
          P::top_k(S) > 0};
}

// The geometry of a stock layer kind (what config::kv_layer_bytes accounts for).
template <shape S>
constexpr kv_layer_geometry kv_geometry(config::layer_kind kind, index_t capacity) {
  switch (kind) {
    case config::layer_kind::csa:
      return kv_geometry<S, csa>(capacity);
    case config::layer_kind::hca:
      return kv_geometry<S, hca>(capacity);
    case config::layer_kind::swa:
      break;
  }
  return kv_geometry<S, swa>(capacity);
}

// A sequence's handle: its slot and the generation of that slot when it was opened.
struct sequence_id {
  std::uint64_t value = 0;
  constexpr index_t slot() const { return static_cast<index_t>(value & 0xffffffffu); }
  constexpr std::uint32_t generation() const { return static_cast<std::uint32_t>(value >> 32); }
  friend constexpr bool operator==(sequence_id, sequence_id) = default;
};

// The next `tokens` rows of a batched call belong to sequence `seq`.
struct sequence_tokens {
  sequence_id seq;
  index_t tokens = 0;
};

// The sizes a cache is made with.
struct kv_cache_options {
  index_t max_sequences = 1;  // sequence slots (forks included)
  index_t capacity = 0;       // tokens per sequence
  index_t page_bytes = 0;     // bytes per page, a multiple of 64; 0: 64 entry rows
  index_t max_truncate = 0;   // how far back truncate() may go (besides to 0)
};

template <kv_shape S>
class kv_cache {
  static_assert(S.head_dim > S.rope_dim && S.rope_dim > 0 && S.index_head_dim >= 0,
                "dsv4 kv_shape: head_dim > rope_dim > 0 and index_head_dim >= 0");

 public:
  using codecs = kv_codecs<S.format>;
  using entry_region = row_region<typename codecs::entry>;
  using key_region = row_region<typename codecs::key>;
  static constexpr index_t entry_row_bytes = entry_region::bytes_per_row(S.head_dim, S.rope_dim);
  static constexpr index_t key_row_bytes = key_region::bytes_per_row(S.index_head_dim, 0);
  static constexpr index_t default_page_bytes = round_up(64 * std::max(entry_row_bytes, key_row_bytes), 64);

  // One sequence in one layer: what the attention layer reads. The regions address the cache's
  // pages through the sequence's block table; writes go through write_row and write_key.
  struct sequence_view {
    entry_region rows;             // (ring + max_entries) rows: ring rows, then compressed entries
    key_region keys;               // (max_entries) index keys, no rows when not indexed
    index_t window = 0;            // rows a query attends to
    index_t ring = 0;              // ring rows: position p in row p mod ring
    index_t tokens = 0;            // position of the next token
    compressor_state main, index;  // the compressors' tails (index: the indexer's key compressor)
  };

  // A cache over the engine's memory: pool.size() / page_bytes pages at pool.data() (64-byte
  // aligned), one layer per geometry.
  static result<kv_cache> create(const kv_cache_options& o, std::vector<kv_layer_geometry> layers,
                                 std::span<std::byte> pool) {
    kv_cache cache;
    DSV4_TRY(cache.plan(o, std::move(layers)));
    if (reinterpret_cast<std::uintptr_t>(pool.data()) % 64 != 0)
      return status{errc::invalid_argument, "kv_cache: the pool must be 64-byte aligned"};
    const index_t pages = static_cast<index_t>(pool.size()) / cache.page_bytes_;
    if (pages > INT32_MAX)
      return status{errc::out_of_range, "kv_cache: more than 2^31 - 1 pages in the pool"};
    DSV4_TRY(cache.allocate_metadata(pages));
    cache.pool_ = pool.data();
    return cache;
  }

  // A cache that owns a pool large enough for o.max_sequences sequences of o.capacity tokens.
  static result<kv_cache> create(const kv_cache_options& o, std::vector<kv_layer_geometry> layers) {
    kv_cache cache;
    DSV4_TRY(cache.plan(o, std::move(layers)));
    const index_t max_sequences = o.max_sequences, capacity = o.capacity;
    std::int64_t pages = 0, bytes = 0;
    if (!checked_mul(max_sequences, cache.pages_for(capacity), pages) ||
        !checked_mul(pages, cache.page_bytes_, bytes) || pages > INT32_MAX)
      return status{errc::out_of_range, "kv_cache: " + std::to_string(max_sequences) + " sequences of " +
                                            std::to_string(capacity) + " tokens do not fit in memory"};
    DSV4_TRY(cache.allocate_metadata(pages));
    cache.owned_.reset(static_cast<std::byte*>(
        ::operator new[](static_cast<std::size_t>(bytes), std::align_val_t{64}, std::nothrow)));
    if (bytes > 0 && !cache.owned_)
      return status{errc::out_of_range, "kv_cache: cannot allocate " + std::to_string(bytes) + " bytes"};
    cache.pool_ = cache.owned_.get();
    return cache;
  }
  static result<kv_cache> create(index_t max_sequences, index_t capacity,
                                 std::vector<kv_layer_geometry> layers) {
    return create(kv_cache_options{max_sequences, capacity, 0, 0}, std::move(layers));
  }

  index_t max_sequences() const { return options_.max_sequences; }
  index_t capacity() const { return options_.capacity; }
  index_t max_truncate() const { return options_.max_truncate; }
  int layers() const { return static_cast<int>(layers_.size()); }
  const kv_layer_geometry& geometry(int layer) const {
    return layers_[static_cast<std::size_t>(layer)].geometry;
  }

  // ---- sizes --------------------------------------------------------------------------------------

  index_t page_bytes() const { return page_bytes_; }
  index_t pages() const { return static_cast<index_t>(refcount_.size()); }
  index_t free_pages() const { return free_top_; }
  // Rows of each kind one page holds, and the bytes they fill.
  index_t entry_rows_per_page() const { return entry_rpp_; }
  index_t key_rows_per_page() const { return key_rpp_; }
  index_t entry_page_bytes() const { return entry_rpp_ * entry_row_bytes; }
  index_t key_page_bytes() const { return key_rpp_ * key_row_bytes; }
  // Bytes of the pool, and the pool itself (every page, held or free).
  std::int64_t bytes() const { return pages() * page_bytes_; }
  std::span<const std::byte> pool() const { return {pool_, static_cast<std::size_t>(bytes())}; }

  // Pages a sequence of `tokens` tokens holds over every layer.
  index_t pages_for(index_t tokens) const {
    index_t n = 0;
    for (const layer_plan& l : layers_) {
      const index_t entries = l.geometry.ratio > 0 ? tokens / l.geometry.ratio : 0;
      n += ceil_div(std::min(tokens, l.ring), entry_rpp_) + ceil_div(entries, entry_rpp_) +
           (l.geometry.indexed ? ceil_div(entries, key_rpp_) : 0);
    }
    return n;
  }
  // Bytes of rows, keys and compressor tails a sequence of `tokens` tokens needs (the window's
  // min(tokens, window) rows, not the ring's spare ones): config::kv_sequence_bytes.
  std::int64_t sequence_bytes(index_t tokens) const {
    std::int64_t b = 0;
    for (const layer_plan& l : layers_) {
      const index_t entries = l.geometry.ratio > 0 ? tokens / l.geometry.ratio : 0;
      b += (std::min(tokens, l.geometry.window) + entries) * entry_row_bytes +
           (l.geometry.indexed ? entries * key_row_bytes : 0) + 4 * l.state_floats;
    }
    return b;
  }

  // ---- sequences --------------------------------------------------------------------------------

  result<sequence_id> open() {
    const index_t s = free_slot();
    if (s < 0) return no_slot();
    return start(s);
  }
  // No more tokens may be appended; the rows stay readable until release.
  status finish(sequence_id seq) {
    DSV4_TRY(check_open(seq));
    records_[static_cast<std::size_t>(seq.slot())].state = sequence_state::finished;
    return {};
  }
  status release(sequence_id seq) {
    DSV4_TRY(check_known(seq));
    for (int l = 0; l < layers(); ++l) drop_pages(seq.slot(), l, 0);
    records_[static_cast<std::size_t>(seq.slot())].state = sequence_state::free;
    return {};
  }
  // A new open sequence with the history of seq: it shares seq's pages until either writes to
  // one, and has its own copy of the compressor tails.
  result<sequence_id> fork(sequence_id seq) {
    DSV4_TRY(check_known(seq));
    const index_t s = free_slot();
    if (s < 0) return no_slot();
    const index_t from = seq.slot();
    std::copy_n(tables_.data() + from * table_stride_, table_stride_, tables_.data() + s * table_stride_);
    for (index_t i = 0; i < table_stride_; ++i)
      if (const std::int32_t p = tables_[static_cast<std::size_t>(s * table_stride_ + i)]; p >= 0)
        ++refcount_[static_cast<std::size_t>(p)];
    std::copy_n(states_.data() + from * state_stride_, state_stride_, states_.data() + s * state_stride_);
    for (int l = 0; l < layers(); ++l) {
      progress(s, l) = progress(from, l);
    }
    records_[static_cast<std::size_t>(s)].state = sequence_state::open;
    return id_of(s);
  }
  // Returns seq to position `tokens` in every layer that holds more: back by at most max_truncate
  // tokens, or to 0. A layer that holds fewer keeps them (an MTP block runs a token behind the
  // layers of the main model).
  status truncate(sequence_id seq, index_t tokens) {
    DSV4_TRY(check_open(seq));
    index_t most = 0;
    for (int l = 0; l < layers(); ++l) most = std::max(most, progress(seq.slot(), l).tokens);
    if (tokens < 0 || tokens > most)
      return {errc::out_of_range, "kv_cache: truncate to " + std::to_string(tokens) +
                                      " tokens, the sequence holds " + std::to_string(most) + " tokens"};
    if (tokens > 0 && most - tokens > options_.max_truncate)
      return {errc::out_of_range,
              "kv_cache: truncate from " + std::to_string(most) + " to " + std::to_string(tokens) +
                  " goes back further than max_truncate = " + std::to_string(options_.max_truncate)};
    for (int l = 0; l < layers(); ++l) {
      token_progress& p = progress(seq.slot(), l);
      if (p.tokens <= tokens) continue;
      p.tokens = tokens;
      p.first = std::min(p.first, tokens);
      drop_pages(seq.slot(), l, tokens);
    }
    return {};
  }
  // ok when seq names a live sequence (open or finished).
  status check_known(sequence_id seq) const {
    const index_t s = seq.slot();
    if (s >= max_sequences() || records_[static_cast<std::size_t>(s)].state == sequence_state::free ||
        records_[static_cast<std::size_t>(s)].generation != seq.generation())
      return {errc::invalid_state, "kv_cache: unknown sequence " + describe(seq)};
    return {};
  }
  // ok when tokens may be appended to seq.
  status check_open(sequence_id seq) const {
    DSV4_TRY(check_known(seq));
    if (records_[static_cast<std::size_t>(seq.slot())].state == sequence_state::finished)
      return {errc::invalid_state, "kv_cache: sequence " + describe(seq) + " is finished"};
    return {};
  }
  status check_layer(int layer) const {
    if (layer < 0 || layer >= layers())
      return {errc::out_of_range, "kv_cache: layer " + std::to_string(layer) + " of a cache with " +
                                      std::to_string(layers()) + " layers"};
    return {};
  }
  result<index_t> tokens(sequence_id seq, int layer) const {
    DSV4_TRY(check_known(seq));
    DSV4_TRY(check_layer(layer));
    return progress(seq.slot(), layer).tokens;
  }

  // Declares that seq holds `tokens` tokens in every layer, with pages for all their rows, whose
  // contents the caller then writes through view() (an engine restoring a saved cache, a
  // benchmark synthesizing one). The compressor tails start empty: an entry whose block began
  // before the restore pools only the tokens fed after it.
  status assume_tokens(sequence_id seq, index_t tokens) {
    DSV4_TRY(check_open(seq));
    if (tokens < 0 || tokens > capacity())
      return {errc::out_of_range, "kv_cache: " + std::to_string(tokens) + " tokens in a cache of capacity " +
                                      std::to_string(capacity())};
    index_t reusable = 0;
    for (index_t i = 0; i < table_stride_; ++i) {
      const std::int32_t p = tables_[static_cast<std::size_t>(seq.slot() * table_stride_ + i)];
      reusable += p >= 0 && refcount_[static_cast<std::size_t>(p)] == 1;
    }
    if (pages_for(tokens) > free_top_ + reusable)
      return pool_exhausted(pages_for(tokens), free_top_ + reusable);
    for (int l = 0; l < layers(); ++l) {
      drop_pages(seq.slot(), l, 0);
      const layer_plan& lp = layers_[static_cast<std::size_t>(l)];
      const index_t entries = lp.geometry.ratio > 0 ? tokens / lp.geometry.ratio : 0;
      std::int32_t* t = table(seq.slot(), l);
      for (index_t j = 0; j < ceil_div(std::min(tokens, lp.ring), entry_rpp_); ++j) t[j] = take_page();
      for (index_t j = 0; j < ceil_div(entries, entry_rpp_); ++j) t[lp.ring_pages + j] = take_page();
      if (lp.geometry.indexed)
        for (index_t j = 0; j < ceil_div(entries, key_rpp_); ++j)
          t[lp.ring_pages + lp.entry_pages + j] = take_page();
      progress(seq.slot(), l) = {tokens, tokens};
    }
    return {};
  }

  // ---- what the attention layer uses --------------------------------------------------------------

  // Sequence seq in layer `layer`; both must be valid (check_known, check_layer).
  sequence_view view(int layer, sequence_id seq) {
    const layer_plan& l = layers_[static_cast<std::size_t>(layer)];
    const index_t s = seq.slot();
    const std::int32_t* t = table(s, layer);
    const token_progress& p = progress(s, layer);
    float* state = states_.data() + s * state_stride_ + l.state_offset;
    const index_t main_floats = l.geometry.ratio > 0 ? compressor_state::floats(l.main, l.state_rows) : 0;
    sequence_view v{
        .rows = {pool_, l.ring + l.max_entries, S.head_dim, S.rope_dim, t, entry_shift_, page_bytes_},
        .keys = {pool_, l.geometry.indexed ? l.max_entries : 0, S.index_head_dim, 0,
                 t + l.ring_pages + l.entry_pages, key_shift_, page_bytes_},
        .window = l.geometry.window,
        .ring = l.ring,
        .tokens = p.tokens,
        .main = {},
        .index = {}};
    if (l.geometry.ratio > 0)
      v.main = compressor_state(l.main, l.state_rows, state, state + main_floats / 2, p.first);
    if (l.geometry.indexed)
      v.index =
          compressor_state(l.keys, l.state_rows, state + main_floats,
                           state + main_floats + compressor_state::floats(l.keys, l.state_rows) / 2, p.first);
    return v;
  }

  // Pages appending n tokens to seq in `layer` will take: rows whose page is not held yet, or is
  // shared with another sequence (copied before the write).
  index_t pages_to_append(int layer, sequence_id seq, index_t n) const {
    const layer_plan& l = layers_[static_cast<std::size_t>(layer)];
    const std::int32_t* t = table(seq.slot(), layer);
    const index_t t0 = progress(seq.slot(), layer).tokens;
    index_t count = 0;
    if (n <= 0) return 0;
    const index_t a = index_math::ring_slot(t0, l.ring);
    for (index_t j = 0; j < l.ring_pages; ++j)
      count +=
          index_math::ring_rows_touch(a, n, l.ring, j * entry_rpp_, (j + 1) * entry_rpp_) && must_take(t[j]);
    if (l.geometry.ratio > 0) {
      const index_t e0 = t0 / l.geometry.ratio, e1 = (t0 + n) / l.geometry.ratio;
      for (index_t e = e0; e < e1; e = index_math::next_page_row(e, entry_rpp_))
        count += must_take(t[l.ring_pages + index_math::page_slot(e, entry_rpp_)]);
      if (l.geometry.indexed)
        for (index_t e = e0; e < e1; e = index_math::next_page_row(e, key_rpp_))
          count += must_take(t[l.ring_pages + l.entry_pages + index_math::page_slot(e, key_rpp_)]);
    }
    return count;
  }
  // Writes row `row` of seq's ring-and-entries region (ring row or ring + entry number), taking
  // or copying its page first; the caller counted it in pages_to_append.
  void write_row(int layer, sequence_id seq, index_t row, const float* x) {
    const sequence_view v = view(layer, seq);
    own_page(table(seq.slot(), layer)[index_math::page_slot(row, entry_rpp_)]);
    v.rows.write(row, x);
  }
  // Writes index key e of seq, as write_row does.
  void write_key(int layer, sequence_id seq, index_t e, const float* x) {
    const layer_plan& l = layers_[static_cast<std::size_t>(layer)];
    const sequence_view v = view(layer, seq);
    own_page(table(seq.slot(), layer)[l.ring_pages + l.entry_pages + index_math::page_slot(e, key_rpp_)]);
    v.keys.write(e, x);
  }
  // The token at seq's next position was written in `layer`.
  void advance(int layer, sequence_id seq) { ++progress(seq.slot(), layer).tokens; }
  status pool_exhausted(index_t need, index_t have) const {
    return {errc::out_of_range, "kv_cache: the call needs " + std::to_string(need) +
                                    " more pages, the pool has " + std::to_string(have) + " free of " +
                                    std::to_string(pages())};
  }

  kv_cache(kv_cache&&) noexcept = default;
  kv_cache& operator=(kv_cache&&) noexcept = default;

 private:
  enum class sequence_state : std::uint8_t { free, open, finished };
  struct record {
    std::uint32_t generation = 0;
    sequence_state state = sequence_state::free;
  };
  // Position of the next token, and the first position fed through the compressors since the
  // sequence began or was restored.
  struct token_progress {
    index_t tokens = 0, first = 0;
  };
  struct layer_plan {
    kv_layer_geometry geometry;
    index_t ring = 0, max_entries = 0;                             // rows
    index_t ring_pages = 0, entry_pages = 0, key_pages = 0;        // block table entries
    index_t table_offset = 0, state_offset = 0, state_floats = 0;  // within a sequence's areas
    index_t state_rows = 0;  // compressor rows, coff * ratio + max_truncate
    compressor_shape main{}, keys{};
  };
  struct page_deleter {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };

  kv_cache() = default;

  // Validates the options and layers and lays out the per-sequence areas (no allocation of rows).
  status plan(const kv_cache_options& o, std::vector<kv_layer_geometry> layers) {
    if (o.max_sequences <= 0 || o.max_sequences > INT32_MAX)
      return {errc::invalid_argument, "kv_cache: max_sequences must be in [1, 2^31)"};
    if (o.capacity <= 0 || o.capacity > INT32_MAX)
      return {errc::invalid_argument, "kv_cache: capacity must be in [1, 2^31)"};
    if (o.max_truncate < 0 || o.max_truncate > o.capacity)
      return {errc::invalid_argument, "kv_cache: max_truncate must be in [0, capacity]"};
    page_bytes_ = o.page_bytes == 0 ? default_page_bytes : o.page_bytes;
    if (page_bytes_ < 0 || page_bytes_ % 64 != 0 || page_bytes_ < std::max(entry_row_bytes, key_row_bytes) ||
        page_bytes_ > (index_t{1} << 40))
      return {errc::invalid_argument, "kv_cache: page_bytes = " + std::to_string(page_bytes_) +
                                          " must be a multiple of 64 holding at least one row of each kind"};
    options_ = o;
    // Rows per page: the largest power of two that fits, so that a row's page is a shift away.
    entry_shift_ =
        static_cast<int>(std::bit_width(static_cast<std::uint64_t>(page_bytes_ / entry_row_bytes))) - 1;
    key_shift_ =
        static_cast<int>(std::bit_width(static_cast<std::uint64_t>(page_bytes_ / key_row_bytes))) - 1;
    entry_rpp_ = index_t{1} << entry_shift_;
    key_rpp_ = index_t{1} << key_shift_;
    table_stride_ = 0;
    state_stride_ = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const kv_layer_geometry& g = layers[i];
      const std::string name = "kv_cache: layer " + std::to_string(i) + ": ";
      if (g.window < 1 || g.window > o.capacity)
        return {errc::invalid_argument,
                name + "window " + std::to_string(g.window) + " is not in [1, capacity]"};
      if (g.ratio < 0 || (g.indexed && g.ratio == 0))
        return {errc::invalid_argument,
                name + "compress ratio " + std::to_string(g.ratio) + " is negative, or 0 with an index"};
      layer_plan l;
      l.geometry = g;
      l.ring = round_up(g.window + o.max_truncate, entry_rpp_);
      l.max_entries = g.ratio > 0 ? o.capacity / g.ratio : 0;
      l.ring_pages = l.ring / entry_rpp_;
      l.entry_pages = ceil_div(l.max_entries, entry_rpp_);
      l.key_pages = g.indexed ? ceil_div(l.max_entries, key_rpp_) : 0;
      l.table_offset = table_stride_;
      table_stride_ += l.ring_pages + l.entry_pages + l.key_pages;
      if (g.ratio > 0) {
        l.main = {g.ratio, S.head_dim, g.overlap};
        l.keys = {g.ratio, S.index_head_dim, g.overlap};
        l.state_rows = l.main.rows() + o.max_truncate;
        l.state_floats = compressor_state::floats(l.main, l.state_rows) +
                         (g.indexed ? compressor_state::floats(l.keys, l.state_rows) : 0);
      }
      l.state_offset = state_stride_;
      state_stride_ += l.state_floats;
      layers_.push_back(l);
    }
    std::int64_t total = 0;
    if (!checked_mul(o.max_sequences, std::max(table_stride_, state_stride_), total) ||
        total > (std::int64_t{1} << 40))
      return {errc::out_of_range, "kv_cache: the block tables and compressor tails of " +
                                      std::to_string(o.max_sequences) + " sequences do not fit in memory"};
    return {};
  }

  // Block tables, tails, records and the page lists, allocated once; failure is a status.
  status allocate_metadata(index_t pages) {
    try {
      tables_.assign(static_cast<std::size_t>(max_sequences() * table_stride_), -1);
      states_.assign(static_cast<std::size_t>(max_sequences() * state_stride_), 0.0f);
      progress_.assign(static_cast<std::size_t>(max_sequences()) * layers_.size(), {});
      records_.assign(static_cast<std::size_t>(max_sequences()), {});
      refcount_.assign(static_cast<std::size_t>(pages), 0);
      free_.resize(static_cast<std::size_t>(pages));
    } catch (const std::bad_alloc&) {
      return {errc::out_of_range, "kv_cache: cannot allocate the block tables for " +
                                      std::to_string(max_sequences()) + " sequences and " +
                                      std::to_string(pages) + " pages"};
    }
    // Taken from the top: page 0 first, so a fresh pool hands out pages in address order.
    for (index_t i = 0; i < pages; ++i)
      free_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(pages - 1 - i);
    free_top_ = pages;
    return {};
  }

  index_t free_slot() const {
    for (index_t s = 0; s < max_sequences(); ++s)
      if (records_[static_cast<std::size_t>(s)].state == sequence_state::free) return s;
    return -1;
  }
  status no_slot() const {
    return {errc::out_of_range,
            "kv_cache: all " + std::to_string(max_sequences()) + " sequence slots are in use"};
  }
  sequence_id id_of(index_t s) const {
    return sequence_id{(std::uint64_t{records_[static_cast<std::size_t>(s)].generation} << 32) |
                       static_cast<std::uint64_t>(s)};
  }
  sequence_id start(index_t s) {
    record& r = records_[static_cast<std::size_t>(s)];
    r.state = sequence_state::open;
    ++r.generation;
    for (int l = 0; l < layers(); ++l) progress(s, l) = {};
    return id_of(s);
  }

  std::int32_t* table(index_t slot, int layer) {
    return tables_.data() + slot * table_stride_ + layers_[static_cast<std::size_t>(layer)].table_offset;
  }
  const std::int32_t* table(index_t slot, int layer) const {
    return const_cast<kv_cache*>(this)->table(slot, layer);
  }
  token_progress& progress(index_t slot, int layer) {
    return progress_[static_cast<std::size_t>(slot) * layers_.size() + static_cast<std::size_t>(layer)];
  }
  const token_progress& progress(index_t slot, int layer) const {
    return const_cast<kv_cache*>(this)->progress(slot, layer);
  }

  bool must_take(std::int32_t page) const {
    return page < 0 || refcount_[static_cast<std::size_t>(page)] > 1;
  }
  std::int32_t take_page() {
    const std::int32_t p = free_[static_cast<std::size_t>(--free_top_)];
    refcount_[static_cast<std::size_t>(p)] = 1;
    return p;
  }
  void put_page(std::int32_t& page) {
    if (page < 0) return;
    if (--refcount_[static_cast<std::size_t>(page)] == 0) free_[static_cast<std::size_t>(free_top_++)] = page;
    page = -1;
  }
  // Makes table entry `page` a page this sequence alone holds: a fresh one, or a copy of a shared one.
  void own_page(std::int32_t& page) {
    if (page >= 0 && refcount_[static_cast<std::size_t>(page)] == 1) return;
    const std::int32_t fresh = take_page();
    if (page >= 0) {
      std::memcpy(pool_ + fresh * page_bytes_, pool_ + page * page_bytes_,
                  static_cast<std::size_t>(page_bytes_));
      --refcount_[static_cast<std::size_t>(page)];
    }
    page = fresh;
  }
  // Returns the pages of seq's layer `layer` that a sequence of `tokens` tokens does not use:
  // every page for 0 tokens, the entry and key pages past the last entry otherwise.
  void drop_pages(index_t slot, int layer, index_t tokens) {
    const layer_plan& l = layers_[static_cast<std::size_t>(layer)];
    std::int32_t* t = table(slot, layer);
    const index_t entries = l.geometry.ratio > 0 ? tokens / l.geometry.ratio : 0;
    if (tokens == 0)
      for (index_t j = 0; j < l.ring_pages; ++j) put_page(t[j]);
    for (index_t j = index_math::blocks_for(entries, entry_rpp_); j < l.entry_pages; ++j)
      put_page(t[l.ring_pages + j]);
    for (index_t j = index_math::blocks_for(entries, key_rpp_); j < l.key_pages; ++j)
      put_page(t[l.ring_pages + l.entry_pages + j]);
  }

  static std::string describe(sequence_id seq) {
    return std::to_string(seq.slot()) + "/" + std::to_string(seq.generation());
  }

  kv_cache_options options_{};
  index_t page_bytes_ = 0, entry_rpp_ = 0, key_rpp_ = 0;  // bytes, rows of each kind per page
  int entry_shift_ = 0, key_shift_ = 0;                   // log2 of the rows per page
  index_t table_stride_ = 0, state_stride_ = 0;           // per sequence: block table entries, tail floats
  std::vector<layer_plan> layers_;
  std::vector<std::int32_t> tables_;      // (max_sequences, table_stride) page ids, -1 for none
  std::vector<float> states_;             // (max_sequences, state_stride) compressor tails
  std::vector<token_progress> progress_;  // (max_sequences, layers)
  std::vector<record> records_;           // (max_sequences)
  std::vector<std::int32_t> refcount_;    // (pages) sequences holding each page
  std::vector<std::int32_t> free_;        // (pages) free page ids, a stack of free_top_
  index_t free_top_ = 0;
  std::byte* pool_ = nullptr;
  std::unique_ptr<std::byte[], page_deleter> owned_;
};

// The cache of model config C.
template <config::model_config C>
using kv_cache_for = kv_cache<kv_shape_of(shape_of<C>)>;

// The layers of model C in schedule order, then the MTP block's layers.
template <config::model_config C>
std::vector<kv_layer_geometry> model_layers(index_t capacity) {
  std::vector<kv_layer_geometry> layers;
  for (int l = 0; l < C.n_layers + C.n_mtp_layers; ++l)
    layers.push_back(kv_geometry<shape_of<C>>(config::layer_kind_of(C, std::min(l, C.n_layers)), capacity));
  return layers;
}

// A cache of every layer of model C that owns memory for max_sequences sequences of `capacity`
// tokens.
template <config::model_config C>
result<kv_cache_for<C>> make_model_cache(index_t max_sequences, index_t capacity) {
  if (capacity <= 0) return status{errc::invalid_argument, "kv_cache: capacity must be positive"};
  try {
    return kv_cache_for<C>::create(max_sequences, capacity, model_layers<C>(capacity));
  } catch (const std::bad_alloc&) {
    return status{errc::out_of_range, "kv_cache: out of memory describing the layers"};
  }
}

}  // namespace dsv4::attn
