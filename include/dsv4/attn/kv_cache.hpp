// kv_cache<C>: the hybrid KV cache of a whole model (or of any list of layers) for a fixed number
// of sequences of a fixed capacity, in the storage format config C names (spec §6.4, §8).
//
// Per sequence and per layer it holds
//   ring rows      min(window, capacity) latent rows; token t lives in row t mod ring      (entry)
//   entries        floor(capacity / ratio) compressed latent rows                           (entry)
//   index keys     floor(capacity / ratio) indexer keys, CSA-like layers only                (key)
//   tails          the compressors' fp32 decode state (compressor.hpp)
// with entry and key rows in kv_codecs<C.kv_cache> (kv_codec.hpp): fp32, bf16, or the released
// layout (584-byte FP8/BF16 entries, 68-byte FP4 keys). Each layer owns one allocation holding
// every sequence's rows; bytes() is exactly what config::kv_layer_bytes accounts for the same
// geometry and capacity, summed over layers and sequences (the tests check it).
//
// A layer's geometry (ring size, ratio, overlap, whether it is indexed) is data: the cache works
// for any attention policy, and the attention layer checks that the cache layer it is handed has
// the geometry its policy needs (kv_geometry<C, P>).
//
// Sequences: open() takes a free slot and returns a sequence_id (slot + generation, so an id that
// was released is recognized as stale). finish() ends a sequence: nothing more may be appended or
// rolled back, and its rows stay readable until release() frees the slot. The attention layer
// appends tokens to open sequences only.
//
// Snapshot and rollback (speculative decoding): entries and index keys are append-only, so a
// snapshot copies only the bounded part of each layer (the ring, the compressor tails and the
// token count); rolling back restores it and forgets whatever was appended after it. Its cost
// does not grow with the context.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/concepts.hpp"
#include "dsv4/attn/kv_codec.hpp"
#include "dsv4/config/accounting.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4::attn {

// What a layer stores per sequence, independent of the arithmetic that fills it.
struct kv_layer_geometry {
  index_t window = 0;    // ring rows
  int ratio = 0;         // tokens per compressed entry, 0 for none
  bool overlap = false;  // overlapping compressor (2m-token windows)
  bool indexed = false;  // Lightning Indexer keys are stored

  friend constexpr bool operator==(const kv_layer_geometry&, const kv_layer_geometry&) = default;
};

// The geometry policy P needs in a cache of `capacity` tokens per sequence.
template <config::model_config C, attention_policy P>
constexpr kv_layer_geometry kv_geometry(index_t capacity) {
  return {std::min(P::window(C, capacity), capacity), P::compress_ratio(C), P::overlapping(C),
          P::top_k(C) > 0};
}

// The geometry of a stock layer kind (what config::kv_layer_bytes accounts for).
template <config::model_config C>
constexpr kv_layer_geometry kv_geometry(config::layer_kind kind, index_t capacity) {
  switch (kind) {
    case config::layer_kind::csa:
      return kv_geometry<C, csa>(capacity);
    case config::layer_kind::hca:
      return kv_geometry<C, hca>(capacity);
    case config::layer_kind::swa:
      break;
  }
  return kv_geometry<C, swa>(capacity);
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

// The per-call buffers of the attention layer, owned by the cache so that calls allocate nothing
// once they have seen their largest shapes. Contents never outlive a call.
struct attention_scratch {
  std::vector<float> qr, q, kv, compressor, indexer, o, u;  // per token of a chunk
  std::vector<float> x_act, x_fp8, qr_fp8, u_fp8;           // released numerics: linears' inputs
  std::vector<float> entry, scores, index_work, core;       // per token
  std::vector<std::int32_t> selected, candidates;
};

// The bounded part of every layer of one sequence at one point of its life.
struct kv_snapshot {
  sequence_id seq;
  struct layer {
    index_t tokens = 0;
    std::vector<std::byte> ring;  // ring payloads, then ring scale groups
    compressor_state main, keys;
  };
  std::vector<layer> layers;
};

template <config::model_config C>
class kv_cache {
  static_assert(config::is_valid_config<C>);

 public:
  using codecs = kv_codecs<C.kv_cache>;
  using entry_region = row_region<typename codecs::entry>;
  using key_region = row_region<typename codecs::key>;

  // The state of one sequence in one layer.
  struct slot_state {
    index_t tokens = 0;  // position of the next token
    compressor_state main, keys;
  };
  // What the attention layer reads and appends to for one sequence in one layer.
  struct slot_view {
    entry_region rows;  // (ring + max_entries) rows: ring first, then compressed entries
    key_region keys;    // (max_entries) index keys, empty when not indexed
    index_t ring = 0;   // ring rows
    slot_state& state;
  };

  // A cache of max_sequences sequences of `capacity` tokens, one layer per geometry.
  static result<kv_cache> create(index_t max_sequences, index_t capacity,
                                 std::vector<kv_layer_geometry> layers) {
    if (max_sequences <= 0 || max_sequences > 0xffffffffll)
      return status{errc::invalid_argument, "kv_cache: max_sequences must be in [1, 2^32)"};
    if (capacity <= 0) return status{errc::invalid_argument, "kv_cache: capacity must be positive"};
    for (const kv_layer_geometry& g : layers) {
      if (g.window < 0 || g.ratio < 0 || (g.indexed && g.ratio == 0))
        return status{errc::invalid_argument,
                      "kv_cache: a layer geometry has a negative size or an index "
                      "without a compressor"};
    }
    return kv_cache(max_sequences, capacity, std::move(layers));
  }

  // The cache of model C: its layers in schedule order, then the MTP block's layers.
  static result<kv_cache> for_model(index_t max_sequences, index_t capacity) {
    std::vector<kv_layer_geometry> layers;
    for (int l = 0; l < C.n_layers + C.n_mtp_layers; ++l)
      layers.push_back(kv_geometry<C>(config::layer_kind_of(C, std::min(l, C.n_layers)), capacity));
    return create(max_sequences, capacity, std::move(layers));
  }

  index_t max_sequences() const { return max_sequences_; }
  index_t capacity() const { return capacity_; }
  int layers() const { return static_cast<int>(layers_.size()); }
  const kv_layer_geometry& geometry(int layer) const {
    return layers_[static_cast<std::size_t>(layer)].geometry;
  }

  // Bytes of cache storage: rows, keys and compressor tails of every sequence slot and layer.
  std::int64_t bytes() const {
    std::int64_t b = 0;
    for (const layer_store& l : layers_) b += max_sequences_ * (l.slot_bytes + 4 * l.tail_floats);
    return b;
  }

  // ---- sequences --------------------------------------------------------------------------------

  result<sequence_id> open() {
    for (index_t s = 0; s < max_sequences_; ++s) {
      record& r = records_[static_cast<std::size_t>(s)];
      if (r.state != sequence_state::free) continue;
      r.state = sequence_state::open;
      ++r.generation;
      for (layer_store& l : layers_) reset(l.slots[static_cast<std::size_t>(s)]);
      return sequence_id{(std::uint64_t{r.generation} << 32) | static_cast<std::uint64_t>(s)};
    }
    return status{errc::out_of_range,
                  "kv_cache: all " + std::to_string(max_sequences_) + " sequence slots are in use"};
  }
  // No more tokens may be appended; the rows stay readable until release.
  status finish(sequence_id seq) {
    DSV4_TRY(check_open(seq));
    records_[static_cast<std::size_t>(seq.slot())].state = sequence_state::finished;
    return {};
  }
  status release(sequence_id seq) {
    DSV4_TRY(check_known(seq));
    records_[static_cast<std::size_t>(seq.slot())].state = sequence_state::free;
    return {};
  }
  // ok when seq names a live sequence (open or finished).
  status check_known(sequence_id seq) const {
    const index_t s = seq.slot();
    if (s >= max_sequences_ || records_[static_cast<std::size_t>(s)].state == sequence_state::free ||
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
  result<index_t> tokens(sequence_id seq, int layer) const {
    DSV4_TRY(check_known(seq));
    DSV4_TRY(check_layer(layer));
    return layers_[static_cast<std::size_t>(layer)].slots[static_cast<std::size_t>(seq.slot())].tokens;
  }

  // Declares that seq holds `tokens` tokens in every layer whose rows were written directly
  // through view() (an engine restoring a saved cache, a benchmark synthesizing one). The
  // compressor tails start empty: an entry whose block began before the restore pools only the
  // tokens fed after it.
  status assume_tokens(sequence_id seq, index_t tokens) {
    DSV4_TRY(check_open(seq));
    if (tokens < 0 || tokens > capacity_)
      return {errc::out_of_range, "kv_cache: " + std::to_string(tokens) + " tokens in a cache of capacity " +
                                      std::to_string(capacity_)};
    for (layer_store& l : layers_) {
      slot_state& st = l.slots[static_cast<std::size_t>(seq.slot())];
      reset(st);
      st.tokens = tokens;
    }
    return {};
  }

  // ---- snapshot and rollback --------------------------------------------------------------------

  result<kv_snapshot> snapshot(sequence_id seq) const {
    DSV4_TRY(check_known(seq));
    kv_snapshot snap{seq, {}};
    for (int l = 0; l < layers(); ++l) {
      const slot_view v = const_cast<kv_cache*>(this)->view(l, seq.slot());
      kv_snapshot::layer& out = snap.layers.emplace_back();
      out.tokens = v.state.tokens;
      out.main = v.state.main;
      out.keys = v.state.keys;
      const auto [payload, scales] = ring_bytes(v);
      out.ring.resize(static_cast<std::size_t>(payload + scales));
      std::memcpy(out.ring.data(), v.rows.payload(0), static_cast<std::size_t>(payload));
      std::memcpy(out.ring.data() + payload, v.rows.scales(0), static_cast<std::size_t>(scales));
    }
    return snap;
  }

  // Returns seq to the state of `snap`, taken from the same sequence at a position not past the
  // current one. On error nothing changes.
  status rollback(sequence_id seq, const kv_snapshot& snap) {
    DSV4_TRY(check_open(seq));
    if (snap.seq != seq)
      return {errc::invalid_argument, "kv_cache: snapshot of sequence " + describe(snap.seq) +
                                          " cannot roll back sequence " + describe(seq)};
    if (static_cast<int>(snap.layers.size()) != layers())
      return {errc::shape_mismatch, "kv_cache: snapshot has " + std::to_string(snap.layers.size()) +
                                        " layers, the cache " + std::to_string(layers())};
    for (int l = 0; l < layers(); ++l) {
      const index_t now = view(l, seq.slot()).state.tokens;
      if (snap.layers[static_cast<std::size_t>(l)].tokens > now)
        return {errc::invalid_argument, "kv_cache: layer " + std::to_string(l) + " is at token " +
                                            std::to_string(now) + ", before the snapshot's " +
                                            std::to_string(snap.layers[static_cast<std::size_t>(l)].tokens)};
    }
    for (int l = 0; l < layers(); ++l) {
      const slot_view v = view(l, seq.slot());
      const kv_snapshot::layer& in = snap.layers[static_cast<std::size_t>(l)];
      v.state.tokens = in.tokens;
      v.state.main = in.main;
      v.state.keys = in.keys;
      const auto [payload, scales] = ring_bytes(v);
      std::memcpy(v.rows.payload(0), in.ring.data(), static_cast<std::size_t>(payload));
      std::memcpy(v.rows.scales(0), in.ring.data() + payload, static_cast<std::size_t>(scales));
    }
    return {};
  }

  // ---- storage access (the attention layer, tests and benchmarks) -------------------------------

  status check_layer(int layer) const {
    if (layer < 0 || layer >= layers())
      return {errc::out_of_range, "kv_cache: layer " + std::to_string(layer) + " of a cache with " +
                                      std::to_string(layers()) + " layers"};
    return {};
  }
  // Sequence slot `slot` of layer `layer`; both must be in range.
  slot_view view(int layer, index_t slot) {
    layer_store& l = layers_[static_cast<std::size_t>(layer)];
    std::byte* base = l.arena.get() + slot * l.slot_bytes;
    const entry_region rows{base, l.geometry.window + l.max_entries, C.head_dim, C.rope_dim};
    const key_region keys{base + rows.bytes(), l.geometry.indexed ? l.max_entries : 0, C.index_head_dim, 0};
    return {rows, keys, l.geometry.window, l.slots[static_cast<std::size_t>(slot)]};
  }
  // Every byte of rows and keys layer `layer` holds, all sequence slots (slot s at s * size / max).
  std::span<const std::byte> storage(int layer) const {
    const layer_store& l = layers_[static_cast<std::size_t>(layer)];
    return {l.arena.get(), static_cast<std::size_t>(max_sequences_ * l.slot_bytes)};
  }
  attention_scratch& scratch() { return scratch_; }

 private:
  enum class sequence_state : std::uint8_t { free, open, finished };
  struct record {
    std::uint32_t generation = 0;
    sequence_state state = sequence_state::free;
  };
  struct layer_store {
    kv_layer_geometry geometry;
    index_t max_entries = 0;
    index_t slot_bytes = 0;   // rows + keys of one sequence
    index_t tail_floats = 0;  // compressor tails of one sequence
    std::unique_ptr<std::byte[]> arena;
    std::vector<slot_state> slots;
  };

  kv_cache(index_t max_sequences, index_t capacity, std::vector<kv_layer_geometry> layers)
      : max_sequences_(max_sequences),
        capacity_(capacity),
        records_(static_cast<std::size_t>(max_sequences)) {
    for (const kv_layer_geometry& g : layers) {
      layer_store& l = layers_.emplace_back();
      l.geometry = g;
      l.max_entries = g.ratio > 0 ? capacity / g.ratio : 0;
      l.slot_bytes = entry_region::bytes_per_row(C.head_dim, C.rope_dim) * (g.window + l.max_entries) +
                     (g.indexed ? key_region::bytes_per_row(C.index_head_dim, 0) * l.max_entries : 0);
      // Uninitialized on purpose: rows are written before they are read, and untouched pages of a
      // large cache cost no memory until a sequence reaches them.
      l.arena.reset(new std::byte[static_cast<std::size_t>(max_sequences * l.slot_bytes)]);
      const compressor_shape main{g.ratio, C.head_dim, g.overlap}, keys{g.ratio, C.index_head_dim, g.overlap};
      for (index_t s = 0; s < max_sequences; ++s) {
        slot_state& st = l.slots.emplace_back();
        if (g.ratio > 0) st.main = compressor_state(main);
        if (g.indexed) st.keys = compressor_state(keys);
      }
      l.tail_floats = (g.ratio > 0 ? 2 * main.rows() * main.channels() : 0) +
                      (g.indexed ? 2 * keys.rows() * keys.channels() : 0);
    }
  }

  static void reset(slot_state& s) {
    s.tokens = 0;
    if (s.main.shape().ratio > 0) s.main.reset();
    if (s.keys.shape().ratio > 0) s.keys.reset();
  }
  // Bytes of the ring's payloads and of its scale groups.
  static std::pair<index_t, index_t> ring_bytes(const slot_view& v) {
    return {v.rows.payload(v.ring) - v.rows.payload(0), v.rows.scales(v.ring) - v.rows.scales(0)};
  }
  static std::string describe(sequence_id seq) {
    return std::to_string(seq.slot()) + "/" + std::to_string(seq.generation());
  }

  index_t max_sequences_, capacity_;
  std::vector<record> records_;
  std::vector<layer_store> layers_;
  attention_scratch scratch_;
};

}  // namespace dsv4::attn
