// Text generation over a causal_lm: the loop an engine writes around forward(), kept small so that
// an engine can read it and skip it.
//
// generate: one prefill of the prompt, then one decode step per token, each token drawn by
// sample() (sampling.hpp) with the counter set to the position it will take, so a seed gives the
// same text whatever else the engine runs beside it; stops at a stop token or after
// max_new_tokens.
//
// generate_speculative (greedy only): the MTP block drafts one token, one two-token forward
// verifies it (spec §10):
//   main at position n has produced x (the next token); the MTP block, at position n - 1 with the
//   main model's streams H_{n-1} and token x, drafts d for position n + 1.
//   forward([x, d]) at positions n, n + 1 gives logits l_n, l_{n+1} and streams H_n, H_{n+1}.
//   argmax l_n == d: both accepted, the next x is argmax l_{n+1}, the MTP block takes (H_n, d)
//   and (H_{n+1}, x).  Otherwise d is dropped (the cache truncated back by one token, which needs
//   kv_cache_options::max_truncate >= 1), the next x is argmax l_n and the MTP block takes (H_n, x).
// Every main-model logit is computed exactly as plain decoding computes it (a sequence's rows do
// not depend on how its tokens are grouped into calls), so the tokens equal generate's greedy
// tokens; the stats say how many drafts were accepted.
//
// Both take an optional on_token callable, called with each token as it is produced, in order
// (the stop token included): a program streams the text from it, and stops generation after a
// token by returning false (a callable that returns void never stops it). The tokens are the same
// with or without it. They time themselves: prefill_seconds is the prompt's forward and the draw
// of the first token (for generate_speculative also the MTP block over the prompt), decode_seconds
// every later step; the callback's own time is in neither.
//
// When they return, the cache holds the prompt and every generated token but the last, which has
// been drawn but not fed: a conversation continues by feeding that token first.
//
// Both allocate their buffers once per call (a convenience; engines drive forward() with their own).
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/workspace.hpp"
#include "dsv4/model/causal_lm.hpp"
#include "dsv4/model/sampling.hpp"

namespace dsv4::model {

// The tokens generate* appended after the prompt, the speculative decoder's counts and the timings.
struct generation {
  std::vector<std::int32_t> tokens;
  index_t drafted = 0;         // MTP drafts verified
  index_t accepted = 0;        // of them, the ones the main model agreed with
  double prefill_seconds = 0;  // the prompt and the first token (see the banner)
  double decode_seconds = 0;   // the tokens after the first
  double acceptance() const {
    return drafted > 0 ? static_cast<double>(accepted) / static_cast<double>(drafted) : 0.0;
  }
};

// What on_token may be: called with each token id; returns void, or false to stop after it.
template <class F>
concept token_callback = std::invocable<F&, std::int32_t> &&
    (std::is_void_v<std::invoke_result_t<F&, std::int32_t>> ||
     std::convertible_to<std::invoke_result_t<F&, std::int32_t>, bool>);

// The default on_token: nothing to do, never stops.
struct no_token_callback {
  void operator()(std::int32_t) const noexcept {}
};

namespace detail {
using generate_clock = std::chrono::steady_clock;
inline double seconds_since(generate_clock::time_point t0) {
  return std::chrono::duration<double>(generate_clock::now() - t0).count();
}

// Appends t to g, tells on_token, and says whether generation stops there.
template <class F>
bool append(generation& g, std::int32_t t, const stop_condition& stop, F& on_token) {
  g.tokens.push_back(t);
  bool done = should_stop(stop, t, static_cast<index_t>(g.tokens.size()));
  if constexpr (std::is_void_v<std::invoke_result_t<F&, std::int32_t>>) {
    on_token(t);
  } else {
    if (!static_cast<bool>(on_token(t))) done = true;
  }
  return done;
}
}  // namespace detail

// Feeds `prompt` to sequence seq (from its current position) and generates until `stop` or until
// on_token returns false.
template <class LM, token_callback OnToken = no_token_callback>
result<generation> generate(const LM& m, typename LM::cache_type& cache, attn::sequence_id seq,
                            std::span<const std::int32_t> prompt, const sampling_params& sp,
                            const stop_condition& stop, OnToken&& on_token = {}) {
  constexpr index_t vocab = LM::model_config.vocab_size;
  DSV4_TRY(check_sampling(sp, vocab));
  if (stop.max_new_tokens < 1)
    return status{errc::invalid_argument, "stop_condition.max_new_tokens must be >= 1"};
  auto at = cache.tokens(seq, 0);
  if (!at) return at.error();
  std::vector<float> logits(static_cast<std::size_t>(vocab));
  // One workspace for every call: the prompt's forward is the largest.
  workspace_buffer forward_ws(
      m.workspace_bytes(std::max<index_t>(static_cast<index_t>(prompt.size()), 1), cache.capacity())),
      sample_ws(sample_workspace_bytes(vocab));
  generation g;
  sequence_input in{seq, prompt, logits_rows::last};
  for (index_t position = *at + static_cast<index_t>(prompt.size());; ++position) {
    const auto t0 = detail::generate_clock::now();
    DSV4_TRY(m.forward(cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}), forward_ws.span()));
    auto t = sample(logits, sp, static_cast<std::uint64_t>(position), sample_ws.span());
    if (!t) return t.error();
    (g.tokens.empty() ? g.prefill_seconds : g.decode_seconds) += detail::seconds_since(t0);
    if (detail::append(g, *t, stop, on_token)) return g;
    in.tokens = std::span<const std::int32_t>(&g.tokens.back(), 1);
  }
}

// Greedy generation with MTP drafts (see the banner); m must hold an MTP block and the cache allow
// truncating by one token.
template <class LM, token_callback OnToken = no_token_callback>
result<generation> generate_speculative(const LM& m, typename LM::cache_type& cache, attn::sequence_id seq,
                                        std::span<const std::int32_t> prompt, const stop_condition& stop,
                                        OnToken&& on_token = {}) {
  constexpr index_t vocab = LM::model_config.vocab_size, hc = LM::model_config.hc_mult,
                    d = LM::model_config.d_model;
  if (!m.has_mtp()) return status{errc::invalid_state, "generate_speculative: the model holds no MTP block"};
  if (cache.max_truncate() < 1)
    return status{errc::invalid_argument, "generate_speculative: the cache must allow max_truncate >= 1"};
  if (stop.max_new_tokens < 1)
    return status{errc::invalid_argument, "stop_condition.max_new_tokens must be >= 1"};
  auto main_at = cache.tokens(seq, 0), mtp_at = cache.tokens(seq, LM::model_config.n_layers);
  if (!main_at) return main_at.error();
  if (*mtp_at != *main_at)
    return status{errc::invalid_state,
                  "generate_speculative: the sequence's MTP layer must be at its main position"};
  const auto n = static_cast<index_t>(prompt.size());
  std::vector<float> logits(static_cast<std::size_t>(2 * vocab)),
      hidden(static_cast<std::size_t>(std::max<index_t>(n, 2) * hc * d));
  // One workspace for every call (the main model's and the MTP block's): the prompt's is the largest.
  workspace_buffer ws(m.workspace_bytes(std::max<index_t>(n, 2), cache.capacity()));
  const auto argmax = [&](index_t row) {
    const float* l = logits.data() + row * vocab;
    return static_cast<std::int32_t>(std::max_element(l, l + vocab) - l);
  };
  const auto streams = [&](index_t rows) { return tensor_view<float, 3>(hidden.data(), {rows, hc, d}); };
  // The MTP block over `next` with the first rows of `hidden`; returns its draft.
  std::vector<std::int32_t> next;
  const auto draft = [&]() -> result<std::int32_t> {
    const sequence_input in{seq, next, logits_rows::last};
    const auto rows = static_cast<index_t>(next.size());
    DSV4_TRY(m.mtp_forward(cache, {&in, 1}, tensor_view<const float, 3>(streams(rows)),
                           tensor_view<float, 2>(logits.data(), {1, vocab}), ws.span()));
    return argmax(0);
  };

  generation g;
  auto t0 = detail::generate_clock::now();
  const sequence_input first{seq, prompt, logits_rows::last};
  DSV4_TRY(
      m.forward(cache, {&first, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}), streams(n), ws.span()));
  std::int32_t x = argmax(0);
  g.prefill_seconds += detail::seconds_since(t0);
  if (detail::append(g, x, stop, on_token)) return g;
  t0 = detail::generate_clock::now();
  next.assign(prompt.begin() + 1, prompt.end());
  next.push_back(x);
  auto d_tok = draft();
  if (!d_tok) return d_tok.error();
  g.prefill_seconds += detail::seconds_since(t0);
  for (;;) {
    t0 = detail::generate_clock::now();
    const std::int32_t pair[2] = {x, *d_tok};
    const sequence_input verify{seq, pair, logits_rows::all};
    DSV4_TRY(m.forward(cache, {&verify, 1}, tensor_view<float, 2>(logits.data(), {2, vocab}), streams(2),
                       ws.span()));
    ++g.drafted;
    const std::int32_t truth = argmax(0);
    if (truth == *d_tok) {
      ++g.accepted;
      x = argmax(1);
      g.decode_seconds += detail::seconds_since(t0);
      if (detail::append(g, truth, stop, on_token)) {
        // The cache holds the draft, now the last token: drop it, as generate leaves its last.
        DSV4_TRY(cache.truncate(seq, *cache.tokens(seq, 0) - 1));
        return g;
      }
      if (detail::append(g, x, stop, on_token)) return g;
      next = {truth, x};
    } else {
      DSV4_TRY(cache.truncate(seq, *cache.tokens(seq, 0) - 1));
      x = truth;
      g.decode_seconds += detail::seconds_since(t0);
      if (detail::append(g, x, stop, on_token)) return g;
      next = {x};
    }
    t0 = detail::generate_clock::now();
    d_tok = draft();
    if (!d_tok) return d_tok.error();
    g.decode_seconds += detail::seconds_since(t0);
  }
}

}  // namespace dsv4::model
