// attention_policy: what distinguishes the attention layer kinds of DeepSeek-V4 (spec §5–§7),
// and the policies swa, csa, hca and the dense baseline.
//
// A policy is a static description; the layer (attention.hpp) owns the machinery. It says
//   window(c, capacity)  raw latent rows a query attends to, its own included (the ring size);
//   compress_ratio(c)    tokens per compressed entry, 0 for no long-range branch;
//   overlapping(c)       whether the compressor uses 2m-token windows with stride m (CSA);
//   top_k(c)             0: attend to every visible compressed entry (HCA); k > 0: the Lightning
//                        Indexer's top k of them (CSA);
//   yarn_rope            whether the layer uses the compressed-layer RoPE table (theta 160k, YaRN).
// A user policy (another ratio, another k) is a struct with the same members; derive from one of
// these and override what differs (examples/02_custom_attention_policy.cpp).
#pragma once

#include <concepts>
#include <string_view>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

template <class P>
concept attention_policy = requires(const config::model_config& c, index_t capacity) {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::window(c, capacity) } -> std::same_as<index_t>;
  { P::compress_ratio(c) } -> std::same_as<int>;
  { P::overlapping(c) } -> std::same_as<bool>;
  { P::top_k(c) } -> std::same_as<int>;
  { P::yarn_rope } -> std::convertible_to<bool>;
};

// The members every stock policy shares: a window of C.window raw rows, no compressor, plain RoPE.
// Policies derive from it and override what differs.
struct windowed_policy {
  static constexpr index_t window(const config::model_config& c, index_t) { return c.window; }
  static constexpr int compress_ratio(const config::model_config&) { return 0; }
  static constexpr bool overlapping(const config::model_config&) { return false; }
  static constexpr int top_k(const config::model_config&) { return 0; }
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
  static constexpr int compress_ratio(const config::model_config& c) { return c.csa_ratio; }
  static constexpr bool overlapping(const config::model_config&) { return true; }
  static constexpr int top_k(const config::model_config& c) { return c.index_topk; }
  static constexpr bool yarn_rope = true;
};
static_assert(attention_policy<csa>);

// Heavily compressed attention: window + every non-overlapping ratio-m' entry.
struct hca : windowed_policy {
  static constexpr std::string_view name = "hca";
  static constexpr int compress_ratio(const config::model_config& c) { return c.hca_ratio; }
  static constexpr bool yarn_rope = true;
};
static_assert(attention_policy<hca>);

// Full causal attention over the uncompressed latent: the comparison point of the benchmarks.
struct dense : windowed_policy {
  static constexpr std::string_view name = "dense";
  static constexpr index_t window(const config::model_config&, index_t capacity) { return capacity; }
};
static_assert(attention_policy<dense>);

}  // namespace dsv4::attn
