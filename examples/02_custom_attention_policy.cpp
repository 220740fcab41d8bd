// 02_custom_attention_policy: user-defined attention policies plugged into a whole model.
//
// A policy is a static description (dsv4/attn/concepts.hpp): derive from a stock one and override
// a member. A model takes its policies from a bundle (dsv4/model/policies.hpp): derive from the
// default bundle and redefine the alias of one layer kind, and every layer of that kind runs the
// new policy, with the cache geometry it needs. Here, on the committed tiny checkpoint
// (tests/fixtures/tiny_v4, written by Hugging Face transformers):
//   csa_top2     the CSA layers' Lightning Indexer keeps 2 compressed entries instead of index_topk 4;
//   swa_window4  the sliding-window layers attend to the last 4 tokens instead of 8.
// The same weights serve all three models; each continues the same 64-token prompt greedily, and
// the program prints the continuations, how far each model's logits moved from the stock model's
// and what its cache holds.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/model/causal_lm.hpp"

namespace {
using namespace dsv4;
constexpr config::model_config C = config::tiny_v4;

struct csa_top2 : attn::csa {
  static constexpr std::string_view name = "csa_top2";
  static constexpr int top_k(const attn::shape&) { return 2; }
};
struct swa_window4 : attn::swa {
  static constexpr std::string_view name = "swa_window4";
  static constexpr index_t window(const attn::shape&, index_t capacity) {
    return std::min<index_t>(4, capacity);
  }
};

struct top2_policies : model::default_policies<C> {
  using csa_attention = csa_top2;
};
struct window4_policies : model::default_policies<C> {
  using swa_attention = swa_window4;
};

struct outcome {
  std::vector<std::int32_t> tokens;  // the greedy continuation
  std::vector<float> first_logits;   // the logits after the prompt
  std::int64_t cache_bytes = 0;      // pages the sequence holds
};

// Prompt, then greedy decoding of `steps` tokens, with model type LM over the loaded weights.
template <class LM>
outcome continue_prompt(const io::loaded_model<C>& file, const std::vector<std::int32_t>& prompt, int steps) {
  outcome o;
  auto m = LM::create(file.weights(), file.params());
  auto cache = LM::make_cache(1, static_cast<index_t>(prompt.size()) + steps);
  if (!m || !cache) {
    std::printf("cannot build: %s\n", (!m ? m.error() : cache.error()).to_string().c_str());
    return o;
  }
  const attn::sequence_id seq = *cache->open();
  std::vector<float> logits(C.vocab_size);
  model::sequence_input in{seq, prompt};
  for (int i = 0; i < steps; ++i) {
    if (const status s =
            m->forward(*cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, C.vocab_size}));
        !s.ok()) {
      std::printf("forward: %s\n", s.to_string().c_str());
      return o;
    }
    if (i == 0) o.first_logits = logits;
    o.tokens.push_back(
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    in.tokens = std::span<const std::int32_t>(&o.tokens.back(), 1);
  }
  o.cache_bytes = cache->sequence_bytes(*cache->tokens(seq, 0));
  return o;
}

void print(const char* name, const outcome& o, const outcome& stock) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < o.first_logits.size(); ++i) {
    const double diff = o.first_logits[i] - stock.first_logits[i];
    num += diff * diff;
    den += static_cast<double>(stock.first_logits[i]) * stock.first_logits[i];
  }
  std::printf("%-12s logits moved %.3f (relative L2)  cache %6lld B  tokens:", name, std::sqrt(num / den),
              static_cast<long long>(o.cache_bytes));
  for (const std::int32_t t : o.tokens) std::printf(" %d", t);
  std::printf("\n");
}
}  // namespace

int main() {
  auto file = io::load_model<C>(DSV4_TINY_V4_DIR);
  if (!file) {
    std::printf("%s\n", file.error().to_string().c_str());
    return 1;
  }
  std::vector<std::int32_t> prompt;
  for (int i = 0; i < 64; ++i) prompt.push_back((i * 37 + 11) % C.vocab_size);
  constexpr int steps = 12;
  const outcome stock = continue_prompt<model::causal_lm<C>>(*file, prompt, steps);
  print("stock", stock, stock);
  print("csa_top2", continue_prompt<model::causal_lm<C, top2_policies>>(*file, prompt, steps), stock);
  print("swa_window4", continue_prompt<model::causal_lm<C, window4_policies>>(*file, prompt, steps), stock);
  return 0;
}
