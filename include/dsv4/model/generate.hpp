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
// Both allocate their buffers per call (a convenience; engines drive forward() with their own).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/model/causal_lm.hpp"
#include "dsv4/model/sampling.hpp"

namespace dsv4::model {

// The tokens generate* appended after the prompt, and the speculative decoder's counts.
struct generation {
  std::vector<std::int32_t> tokens;
  index_t drafted = 0;   // MTP drafts verified
  index_t accepted = 0;  // of them, the ones the main model agreed with
  double acceptance() const {
    return drafted > 0 ? static_cast<double>(accepted) / static_cast<double>(drafted) : 0.0;
  }
};

namespace detail {
// Appends t to g and says whether generation stops there.
inline bool append(generation& g, std::int32_t t, const stop_condition& stop) {
  g.tokens.push_back(t);
  return should_stop(stop, t, static_cast<index_t>(g.tokens.size()));
}
}  // namespace detail

// Feeds `prompt` to sequence seq (from its current position) and generates until `stop`.
template <class LM>
result<generation> generate(const LM& m, typename LM::cache_type& cache, attn::sequence_id seq,
                            std::span<const std::int32_t> prompt, const sampling_params& sp,
                            const stop_condition& stop) {
  constexpr index_t vocab = LM::model_config.vocab_size;
  DSV4_TRY(check_sampling(sp, vocab));
  if (stop.max_new_tokens < 1)
    return status{errc::invalid_argument, "stop_condition.max_new_tokens must be >= 1"};
  auto at = cache.tokens(seq, 0);
  if (!at) return at.error();
  std::vector<float> logits(static_cast<std::size_t>(vocab));
  std::vector<std::byte> raw(sample_workspace_bytes(vocab) + workspace_align);
  const std::span<std::byte> ws(
      raw.data() + (workspace_align - reinterpret_cast<std::uintptr_t>(raw.data()) % workspace_align) %
                       workspace_align,
      sample_workspace_bytes(vocab));
  generation g;
  sequence_input in{seq, prompt, logits_rows::last};
  for (index_t position = *at + static_cast<index_t>(prompt.size());; ++position) {
    DSV4_TRY(m.forward(cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, vocab})));
    auto t = sample(logits, sp, static_cast<std::uint64_t>(position), ws);
    if (!t) return t.error();
    if (detail::append(g, *t, stop)) return g;
    in.tokens = std::span<const std::int32_t>(&g.tokens.back(), 1);
  }
}

// Greedy generation with MTP drafts (see the banner); m must hold an MTP block and the cache allow
// truncating by one token.
template <class LM>
result<generation> generate_speculative(const LM& m, typename LM::cache_type& cache, attn::sequence_id seq,
                                        std::span<const std::int32_t> prompt, const stop_condition& stop) {
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
                           tensor_view<float, 2>(logits.data(), {1, vocab})));
    return argmax(0);
  };

  generation g;
  const sequence_input first{seq, prompt, logits_rows::last};
  DSV4_TRY(m.forward(cache, {&first, 1}, tensor_view<float, 2>(logits.data(), {1, vocab}), streams(n)));
  std::int32_t x = argmax(0);
  if (detail::append(g, x, stop)) return g;
  next.assign(prompt.begin() + 1, prompt.end());
  next.push_back(x);
  auto d_tok = draft();
  if (!d_tok) return d_tok.error();
  for (;;) {
    const std::int32_t pair[2] = {x, *d_tok};
    const sequence_input verify{seq, pair, logits_rows::all};
    DSV4_TRY(m.forward(cache, {&verify, 1}, tensor_view<float, 2>(logits.data(), {2, vocab}), streams(2)));
    ++g.drafted;
    const std::int32_t truth = argmax(0);
    if (truth == *d_tok) {
      ++g.accepted;
      if (detail::append(g, truth, stop)) return g;
      x = argmax(1);
      if (detail::append(g, x, stop)) return g;
      next = {truth, x};
    } else {
      DSV4_TRY(cache.truncate(seq, *cache.tokens(seq, 0) - 1));
      x = truth;
      if (detail::append(g, x, stop)) return g;
      next = {x};
    }
    d_tok = draft();
    if (!d_tok) return d_tok.error();
  }
}

}  // namespace dsv4::model
