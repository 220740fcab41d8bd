// The two policy families of the feed-forward sublayer (spec §9): a `router` maps a batch of
// tokens to k experts each with mixing weights, an `ffn_policy` maps the normalized hidden states
// of a batch to the sublayer's output.
//
// Why concepts: the score router (sqrt-softplus affinities plus a selection-only bias) and the
// hash router (a frozen token-id table) are interchangeable inside the same MoE layer, and a dense
// SwiGLU FFN replaces the whole MoE in an ablation, so the model's block is written once against
// these two contracts. Memory stays with the caller: routes are written to views the caller owns,
// and an FFN states how many workspace bytes a batch of n tokens needs.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::moe {

// What a router or an FFN reads: the hidden states and, for hash routing, the token ids.
struct ffn_input {
  tensor_view<const float, 2> x;            // (n, d)
  std::span<const std::int32_t> token_ids;  // (n), or empty where nothing hash-routes
};

// Where a router writes. `scores` receives the unbiased affinities of every expert, which the
// weights are taken from and the load-balancing statistics read.
struct routes {
  tensor_view<std::int32_t, 2> experts;  // (n, k) expert ids, in selection order
  tensor_view<float, 2> weights;         // (n, k) mixing weights, summing to route_scale per token
  tensor_view<float, 2> scores;          // (n, n_experts) affinities sqrt(softplus(logits))
};

template <class R>
concept router = requires(const R& r, const ffn_input& in, const routes& out) {
  { r.n_experts() } -> std::same_as<index_t>;
  { r.top_k() } -> std::same_as<index_t>;
  { r.route(in, out) } -> std::same_as<status>;
};

template <class F>
concept ffn_policy = requires(const F& f, const ffn_input& in, tensor_view<float, 2> y,
                              std::span<std::byte> ws, index_t n) {
  { f.workspace_bytes(n) } -> std::same_as<std::size_t>;  // for a batch of n tokens
  { f.forward(in, y, ws) } -> std::same_as<status>;       // y (n, d)
};

}  // namespace dsv4::moe
