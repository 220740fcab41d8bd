// attention_policy: what distinguishes the attention layer kinds of DeepSeek-V4 (spec §5–§7),
// and the policies swa, csa, hca and the dense baseline.
//
// A policy is a static description; the layer (attention.hpp) owns the machinery. It says
//   window(s, capacity)  raw latent rows a query attends to, its own included (the ring size);
//   compress_ratio(s)    tokens per compressed entry, 0 for no long-range branch;
//   overlapping(s)       whether the compressor uses 2m-token windows with stride m (CSA);
//   top_k(s)             0: attend to every visible compressed entry (HCA); k > 0: the Lightning
//                        Indexer's top k of them (CSA);
//   yarn_rope            whether the layer uses the compressed-layer RoPE table (theta 160k, YaRN).
// s is the layer's shape (shape.hpp). A user policy (another ratio, another k)
// is a struct with the same members; derive from one of
// these and override what differs (examples/02_custom_attention_policy.cpp).
#pragma once

#include <concepts>
#include <string_view>

#include "dsv4/attn/shape.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

template <class P>
concept attention_policy = requires(const shape& s, index_t capacity) {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::window(s, capacity) } -> std::same_as<index_t>;
  { P::compress_ratio(s) } -> std::same_as<int>;
  { P::overlapping(s) } -> std::same_as<bool>;
  { P::top_k(s) } -> std::same_as<int>;
  { P::yarn_rope } -> std::convertible_to<bool>;
};

// The members every stock policy shares: a window of s.window raw rows, no compressor, plain RoPE.
// Policies derive from it and override what differs.
struct windowed_policy {
  static constexpr index_t window(const shape& s, index_t) { return s.window; }
  static constexpr int compress_ratio(const shape&) { return 0; }
  static constexpr bool overlapping(const shape&) { return false; }
  static constexpr int top_k(const shape&) { return 0; }
  static constexpr bool yarn_rope = false;
};

// Sliding window only (SWA-only layers, the MTP block): the last `window` tokens.
struct swa : windowed_policy {
  static constexpr std::string_view name = "swa";
};
static_assert(attention_policy<swa>);

// Compressed sparse attention: window + the indexer's top-k of overlapping ratio-m entries.
struct csa : windowed_policy {
  static constexpr std::string_view name = "csa";
  static constexpr int compress_ratio(const shape& s) { return s.csa_ratio; }
  static constexpr bool overlapping(const shape&) { return true; }
  static constexpr int top_k(const shape& s) { return s.index_topk; }
  static constexpr bool yarn_rope = true;
};
static_assert(attention_policy<csa>);

// Heavily compressed attention: window + every non-overlapping ratio-m' entry.
struct hca : windowed_policy {
  static constexpr std::string_view name = "hca";
  static constexpr int compress_ratio(const shape& s) { return s.hca_ratio; }
  static constexpr bool yarn_rope = true;
};
static_assert(attention_policy<hca>);

// Full causal attention over the uncompressed latent: the comparison point of the benchmarks.
struct dense : windowed_policy {
  static constexpr std::string_view name = "dense";
  static constexpr index_t window(const shape&, index_t capacity) { return capacity; }
};
static_assert(attention_policy<dense>);

}  // namespace dsv4::attn
