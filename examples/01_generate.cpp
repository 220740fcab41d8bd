// 01_generate: load a checkpoint, feed a prompt of token ids, sample new tokens one at a time.
//
//   01_generate [checkpoint_dir] [--prompt-ids 1,2,3] [--max-tokens N] [--temperature T]
//               [--top-k K] [--top-p P] [--min-p M] [--seed S] [--threads N]
//
// The directory defaults to the committed tiny checkpoint (tests/fixtures/tiny_v4, vocabulary 128,
// no tokenizer). The model type is fixed at compile time (C below): a directory of another shape
// is refused, naming the first field of its config.json that differs. dsv4-run (dsv4_run.cpp)
// picks the type at run time, decodes text and streams it.
//
// Prints the generated ids on one line (the stop token included when one ends the text), then
// the prefill and decode speeds.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/workspace.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/model/causal_lm.hpp"
#include "dsv4/model/sampling.hpp"

using namespace dsv4;

constexpr config::model_config C = config::tiny_v4;  // the model type this program is built for
using lm = model::causal_lm<C>;

namespace {

struct options {
  std::string dir = DSV4_TINY_V4_DIR;
  std::vector<std::int32_t> prompt = {0, 17, 42, 99, 5, 63, 7, 120};
  index_t max_tokens = 16;
  model::sampling_params sampling;  // greedy unless --temperature > 0
  int threads = 0;                  // 0: parallel_for's default
};

std::vector<std::int32_t> parse_ids(const std::string& s) {
  std::vector<std::int32_t> ids;
  for (std::size_t at = 0; at <= s.size();) {
    const std::size_t end = std::min(s.find(',', at), s.size());
    ids.push_back(static_cast<std::int32_t>(std::stol(s.substr(at, end - at))));
    at = end + 1;
  }
  return ids;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.starts_with("--") && i + 1 == argc) throw std::invalid_argument(a + " needs a value");
    if (a == "--prompt-ids")
      o.prompt = parse_ids(argv[++i]);
    else if (a == "--max-tokens")
      o.max_tokens = std::stol(argv[++i]);
    else if (a == "--temperature")
      o.sampling.temperature = std::stof(argv[++i]);
    else if (a == "--top-k")
      o.sampling.top_k = std::stoi(argv[++i]);
    else if (a == "--top-p")
      o.sampling.top_p = std::stof(argv[++i]);
    else if (a == "--min-p")
      o.sampling.min_p = std::stof(argv[++i]);
    else if (a == "--seed")
      o.sampling.seed = std::stoull(argv[++i]);
    else if (a == "--threads")
      o.threads = std::stoi(argv[++i]);
    else if (!a.starts_with("--"))
      o.dir = a;
    else
      throw std::invalid_argument("unknown option " + a);
  }
  return o;
}

int fail(const std::string& what) {
  std::fprintf(stderr, "01_generate: %s\n", what.c_str());
  return 1;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    return fail(std::string("bad command line: ") + e.what());
  }
  if (o.threads > 0) set_num_threads(o.threads);

  // The checkpoint: config.json checked against C, the safetensors mapped and bound to views.
  auto loaded = io::load_model<C>(o.dir);
  if (!loaded) return fail(loaded.error().message());
  auto m = lm::create(loaded->weights(), loaded->params());
  if (!m) return fail(m.error().message());

  // One sequence in a cache just long enough for the prompt and the new tokens.
  const auto n = static_cast<index_t>(o.prompt.size());
  auto cache = lm::make_cache(1, n + o.max_tokens);
  if (!cache) return fail(cache.error().message());
  const attn::sequence_id seq = *cache->open();

  // The buffers of the loop, made once: logits, the forward's workspace and sample's.
  // (workspace_buffer: 64-byte aligned memory; the prefill's call is the largest, so its size
  // serves every step.)
  std::vector<float> logits(C.vocab_size);
  workspace_buffer forward_ws(m->workspace_bytes(n, cache->capacity()));
  workspace_buffer sample_ws(model::sample_workspace_bytes(C.vocab_size));
  const std::int32_t stop_id = loaded->params().eos_id;

  // Prefill the prompt, then one decode step per token: each forward appends its tokens to the
  // cache and writes the logits of the last one; sample() draws the next token, its counter the
  // position that token takes (a seed then gives the same text however the calls are grouped).
  std::vector<std::int32_t> out;
  model::sequence_input in{seq, o.prompt, model::logits_rows::last};
  double prefill_s = 0, decode_s = 0;
  for (index_t position = n; static_cast<index_t>(out.size()) < o.max_tokens; ++position) {
    const auto t0 = std::chrono::steady_clock::now();
    const status s = m->forward(*cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, C.vocab_size}),
                                forward_ws.span());
    if (!s.ok()) return fail(s.message());
    auto token = model::sample(logits, o.sampling, static_cast<std::uint64_t>(position), sample_ws.span());
    if (!token) return fail(token.error().message());
    (out.empty() ? prefill_s : decode_s) += seconds_since(t0);
    out.push_back(*token);
    if (*token == stop_id) break;
    in.tokens = std::span<const std::int32_t>(&out.back(), 1);
  }

  for (std::size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
  std::printf("\nprefill: %lld tokens, %.1f tokens/s\n", static_cast<long long>(n),
              static_cast<double>(n) / prefill_s);
  const auto steps = static_cast<double>(out.size() - 1);
  if (steps > 0) std::printf("decode:  %.0f tokens, %.1f tokens/s\n", steps, steps / decode_s);
  return 0;
}
