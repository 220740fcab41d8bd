// dsv4-run: runs a DeepSeek-V4 checkpoint directory (config.json, safetensors shards, tokenizer.json)
// on the CPU: a prompt or an interactive chat, tokens streamed as they are drawn, then the speed,
// the KV-cache bytes per token and the decode's fraction of the machine's read bandwidth.
// docs/run.md describes the options and the exit codes.
//
// The model type is a compile-time value (config::model_config), a checkpoint's shape a run-time
// one: config.json is read into an io::model_shape and compared with each preset compiled in
// (each_preset below); the one that matches runs. Every preset instantiates a whole model, so the
// list is the build-time cost of this program.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/io/hf_config.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/io/random_model.hpp"
#include "dsv4/model/causal_lm.hpp"
#include "dsv4/model/generate.hpp"
#include "dsv4/model/sampling.hpp"
#include "dsv4/text/chat.hpp"
#include "dsv4/text/tokenizer.hpp"

namespace {

using namespace dsv4;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

// Exit codes (docs/run.md).
constexpr int exit_ok = 0, exit_failed = 1, exit_not_a_checkpoint = 2, exit_usage = 64;

// An error that ends the program with its exit code.
struct fatal {
  int code;
  std::string message;
};

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}
std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

// ---- command line --------------------------------------------------------------------------------

struct options {
  std::string dir;
  std::string random;  // --random-weights: tiny, peer-small, peer-small-fp8, peer-small-fp4
  std::optional<std::string> prompt, system;
  std::optional<std::vector<std::int32_t>> prompt_ids;
  bool chat = false, think = false, raw = false, mtp = false, ignore_eos = false;
  model::sampling_params sampling;  // greedy by default
  index_t max_tokens = 256;
  index_t context = 4096;  // --chat: tokens the conversation may reach
  int threads = 0;
};

constexpr const char* usage_text =
    "usage: dsv4-run CHECKPOINT_DIR [options]\n"
    "       dsv4-run --random-weights tiny|peer-small|peer-small-fp8|peer-small-fp4 [options]\n"
    "input:    --prompt TEXT      one user turn in the V4 chat format (needs tokenizer.json)\n"
    "          --raw              --prompt as plain text after BOS, no chat format\n"
    "          --prompt-ids 1,2,3 token ids as they are (checkpoints without a tokenizer)\n"
    "          --chat             interactive chat on stdin (/exit or end of input to stop)\n"
    "          --system TEXT      system prompt of the chat format\n"
    "          --think            thinking mode: the answer starts with <think>\n"
    "sampling: --temperature T (0: greedy, the default)  --top-k K  --top-p P  --min-p M  --seed S\n"
    "          --max-tokens N (256)  --ignore-eos  --mtp (MTP speculative decoding, greedy)\n"
    "machine:  --threads N  --context N (chat: tokens the cache holds, 4096)\n";

template <class T>
T number(std::string_view flag, std::string_view s) {
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size())
    throw fatal{exit_usage, std::string(flag) + ": '" + std::string(s) + "' is not a number"};
  return v;
}

std::vector<std::int32_t> parse_ids(std::string_view s) {
  std::vector<std::int32_t> ids;
  for (std::size_t at = 0; at <= s.size();) {
    const std::size_t end = std::min(s.find(',', at), s.size());
    ids.push_back(number<std::int32_t>("--prompt-ids", s.substr(at, end - at)));
    at = end + 1;
  }
  return ids;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) throw fatal{exit_usage, std::string(a) + " needs a value"};
      return argv[++i];
    };
    if (a == "--help" || a == "-h") throw fatal{exit_ok, usage_text};
    if (a == "--prompt")
      o.prompt = std::string(value());
    else if (a == "--prompt-ids")
      o.prompt_ids = parse_ids(value());
    else if (a == "--system")
      o.system = std::string(value());
    else if (a == "--chat")
      o.chat = true;
    else if (a == "--think")
      o.think = true;
    else if (a == "--raw")
      o.raw = true;
    else if (a == "--mtp")
      o.mtp = true;
    else if (a == "--ignore-eos")
      o.ignore_eos = true;
    else if (a == "--temperature")
      o.sampling.temperature = number<float>(a, value());
    else if (a == "--top-k")
      o.sampling.top_k = number<int>(a, value());
    else if (a == "--top-p")
      o.sampling.top_p = number<float>(a, value());
    else if (a == "--min-p")
      o.sampling.min_p = number<float>(a, value());
    else if (a == "--seed")
      o.sampling.seed = number<std::uint64_t>(a, value());
    else if (a == "--max-tokens")
      o.max_tokens = number<index_t>(a, value());
    else if (a == "--context")
      o.context = number<index_t>(a, value());
    else if (a == "--threads")
      o.threads = number<int>(a, value());
    else if (a == "--random-weights")
      o.random = std::string(value());
    else if (a.starts_with("-"))
      throw fatal{exit_usage, "unknown option " + std::string(a) + "\n" + usage_text};
    else if (o.dir.empty())
      o.dir = std::string(a);
    else
      throw fatal{exit_usage, "more than one checkpoint directory: " + o.dir + ", " + std::string(a)};
  }
  if (o.dir.empty() == o.random.empty())
    throw fatal{exit_usage,
                std::string(o.dir.empty() ? "give a checkpoint directory or --random-weights\n"
                                          : "a checkpoint directory or --random-weights, not both\n") +
                    usage_text};
  if (!o.chat && !o.prompt && !o.prompt_ids) throw fatal{exit_usage, "give --prompt, --prompt-ids or --chat"};
  if (o.prompt && o.prompt_ids) throw fatal{exit_usage, "--prompt and --prompt-ids exclude each other"};
  if (o.max_tokens < 1) throw fatal{exit_usage, "--max-tokens must be at least 1"};
  if (o.mtp && o.sampling.temperature != 0.0f)
    throw fatal{exit_usage, "--mtp decodes greedily: leave --temperature at 0"};
  if (o.mtp && o.chat) throw fatal{exit_usage, "--mtp runs a single prompt, not --chat"};
  return o;
}

// ---- the presets compiled in ---------------------------------------------------------------------

// A model type this program can run: its config, the numerics it computes in (the released
// checkpoints' BF16 activations for the FP8 storages), the name --random-weights takes and the
// parameters a random model gets.
template <config::model_config C, numerics Num>
struct preset {
  static constexpr config::model_config config = C;
  static constexpr numerics num = Num;
  const char* name;
  const char* random_name;  // nullptr: not offered by --random-weights
  config::model_params params;
};

// Calls f(preset) for each preset compiled in (f is a generic lambda: one instantiation each).
template <class F>
void each_preset(F&& f) {
  using enum numerics;
  f(preset<config::tiny_v4, exact>{"tiny_v4", "tiny", config::tiny_params});
  f(preset<config::tiny_v4_released, released>{"tiny_v4_released", nullptr, config::tiny_params});
  f(preset<config::peer_small, exact>{"peer_small", "peer-small", config::v4_flash_params});
  f(preset<config::peer_small_fp8, released>{"peer_small_fp8", "peer-small-fp8", config::v4_flash_params});
  f(preset<config::peer_small_fp4, released>{"peer_small_fp4", "peer-small-fp4", config::v4_flash_params});
  f(preset<config::v4_flash, released>{"v4_flash", nullptr, config::v4_flash_params});
#ifdef DSV4_RUN_V4_PRO  // CMake option DSV4_RUN_V4_PRO: one more whole model, about 20 s more build
  f(preset<config::v4_pro, released>{"v4_pro", nullptr, config::v4_pro_params});
#endif
}

// How many fields of `file` differ from config c (to name the closest preset).
int distance(const io::model_shape& file, const config::model_config& c) {
  const io::model_shape want = io::shape_of(c);
  int n = file.family != want.family;
  for (const auto& f : io::detail::int_fields<io::model_shape>()) n += file.*(f.member) != want.*(f.member);
  for (std::size_t l = 0; l < file.compress_ratios.size(); ++l)
    n += file.compress_ratios[l] != want.compress_ratios[l];
  n += (file.linear_format != want.linear_format) + (file.expert_format != want.expert_format) +
       (file.other_format != want.other_format);
  return n;
}

// ---- loading ---------------------------------------------------------------------------------------

void progress(int percent, const std::string& what) {
  std::fprintf(stderr, "[%3d%%] %s\n", percent, what.c_str());
  std::fflush(stderr);
}

// The checkpoint in `dir` as model C, the load's stages reported on stderr; a file that does not
// hold a model C is fatal (exit 2).
template <config::model_config C>
io::loaded_model<C> load_checkpoint(const fs::path& dir, const config::model_params& params) {
  const auto bad = [&](const status& s) { return fatal{exit_not_a_checkpoint, s.message()}; };
  progress(20, "mapping the safetensors of " + dir.string());
  auto ckpt = io::checkpoint::open(dir);
  if (!ckpt) throw bad(ckpt.error());
  progress(40, "validating " + std::to_string(ckpt->canonical_names().size()) + " tensors in " +
                   std::to_string(ckpt->shards().size()) + " shard(s)");
  if (const status s = ckpt->validate(io::shape_of(C)); !s.ok()) throw bad(s);
  progress(60, "binding the weights");
  auto loaded = io::loaded_model<C>::bind(std::move(*ckpt), params);
  if (!loaded) throw bad(loaded.error());
  return std::move(*loaded);
}

// ---- the run ---------------------------------------------------------------------------------------

struct speed {
  index_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_s = 0, decode_s = 0;
};

// A 64-byte aligned buffer of `bytes` bytes.
class aligned_buffer {
 public:
  std::span<std::byte> get(std::size_t bytes) {
    if (raw_.size() < bytes + workspace_align) raw_.assign(bytes + workspace_align, std::byte{});
    const auto skip =
        (workspace_align - reinterpret_cast<std::uintptr_t>(raw_.data()) % workspace_align) % workspace_align;
    return {raw_.data() + skip, bytes};
  }

 private:
  std::vector<std::byte> raw_;
};

// Bytes the decode of one token reads: every weight a token uses as stored (the routed experts
// n_experts_per_tok of n_routed_experts, one row of the embedding and of the hash tables) and the
// KV cache of a sequence of `tokens` tokens.
double decode_bytes_per_token(const config::model_config& c, index_t tokens) {
  double bytes = 0;
  const auto add = [&](const config::tensor_desc& t) {
    double b = static_cast<double>(t.stored_bytes());
    if (t.group == config::tensor_group::routed_experts)
      b *= static_cast<double>(c.n_experts_per_tok) / c.n_routed_experts;
    if (t.group == config::tensor_group::embedding || t.group == config::tensor_group::hash_table)
      b /= static_cast<double>(t.rows);
    bytes += b;
  };
  for (int l = 0; l < c.n_layers; ++l) config::for_each_layer_tensor(c, l, add);
  config::for_each_top_tensor(c, add);
  return bytes + static_cast<double>(config::kv_sequence_bytes(c, c.cache_format, tokens).total());
}

// Read bandwidth: the best of three streaming reads of 256 MiB on every thread parallel_for uses,
// four sequential streams per thread (as bench/roofline.hpp measures it).
double read_bandwidth() {
  const std::int64_t n = std::int64_t{1} << 26;
  const int parts = std::max(1, max_threads());
  std::vector<float> buf(static_cast<std::size_t>(n));
  parallel_for(0, parts, [&](std::int64_t p) {  // first touch by the reading threads
    std::fill(buf.begin() + p * n / parts, buf.begin() + (p + 1) * n / parts, 1.0f);
  });
  constexpr int streams = 4;
  const std::int64_t len = (n / parts) / streams / 16 * 16;
  std::vector<float> sums(static_cast<std::size_t>(parts));
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = clock_type::now();
    parallel_for(0, parts, [&](std::int64_t p) {
      const float* x = buf.data() + p * (n / parts);
      float acc[streams][16] = {};
      for (std::int64_t i = 0; i < len; i += 16)
        for (int j = 0; j < streams; ++j)
          for (int k = 0; k < 16; ++k) acc[j][k] += x[j * len + i + k];
      float t = 0;
      for (const auto& a : acc)
        for (const float v : a) t += v;
      sums[static_cast<std::size_t>(p)] = t;
    });
    best = std::min(best, seconds_since(t0));
  }
  volatile float sink = sums[0];  // keeps the reads
  (void)sink;
  return static_cast<double>(len) * streams * parts * sizeof(float) / best;
}

text::chat_message message(text::chat_role role, std::string content) {
  text::chat_message m;
  m.role = role;
  m.content = std::move(content);
  return m;
}

const char* kind_name(config::layer_kind k) {
  switch (k) {
    case config::layer_kind::swa:
      return "SWA";
    case config::layer_kind::csa:
      return "CSA";
    case config::layer_kind::hca:
      break;
  }
  return "HCA";
}
const char* format_name(kv_format f) {
  switch (f) {
    case kv_format::f32:
      return "f32";
    case kv_format::bf16:
      return "bf16";
    case kv_format::fp8_released:
      break;
  }
  return "fp8, the released layout";
}

// The closing report: speeds, KV bytes per token of each layer kind, the roofline fraction.
template <config::model_config C>
void report(const speed& s, index_t tokens) {
  std::fprintf(stderr, "\nprefill: %lld tokens in %.3f s, %.1f tokens/s\n",
               static_cast<long long>(s.prefill_tokens), s.prefill_s,
               static_cast<double>(s.prefill_tokens) / s.prefill_s);
  if (s.decode_tokens > 0)
    std::fprintf(stderr, "decode:  %lld tokens in %.3f s, %.1f tokens/s\n",
                 static_cast<long long>(s.decode_tokens), s.decode_s,
                 static_cast<double>(s.decode_tokens) / s.decode_s);
  std::fprintf(stderr,
               "KV cache (%s), per layer: bytes held per token at %lld tokens (windows and compressor "
               "state included), and per token as the context grows:\n",
               format_name(C.cache_format), static_cast<long long>(tokens));
  const config::kv_entry_size e = config::kv_entry_bytes(C, C.cache_format);
  for (const config::layer_kind k :
       {config::layer_kind::swa, config::layer_kind::csa, config::layer_kind::hca}) {
    const int layers = config::count_layers(C, k);
    if (layers == 0) continue;
    const config::attention_geometry g = config::geometry_of(C, k);
    const double held = static_cast<double>(config::kv_layer_bytes(C, k, C.cache_format, tokens).total()) /
                        static_cast<double>(tokens);
    std::fprintf(stderr, "  %s x%-3d %10.1f B   ", kind_name(k), layers, held);
    if (g.ratio == 0)
      std::fprintf(stderr, "0 B (a window of %lld entries of %lld B)\n", static_cast<long long>(g.window),
                   static_cast<long long>(e.entry));
    else if (g.indexed)
      std::fprintf(stderr, "%.2f B (an entry of %lld B and an index key of %lld B per %lld tokens)\n",
                   static_cast<double>(e.entry + e.index_key) / static_cast<double>(g.ratio),
                   static_cast<long long>(e.entry), static_cast<long long>(e.index_key),
                   static_cast<long long>(g.ratio));
    else
      std::fprintf(stderr, "%.2f B (an entry of %lld B per %lld tokens)\n",
                   static_cast<double>(e.entry) / static_cast<double>(g.ratio),
                   static_cast<long long>(e.entry), static_cast<long long>(g.ratio));
  }
  if (s.decode_tokens < 2) return;
  const double bytes = decode_bytes_per_token(C, tokens),
               rate = static_cast<double>(s.decode_tokens) / s.decode_s;
  const double bw = read_bandwidth();
  std::fprintf(
      stderr,
      "roofline: decode reads %.2f MB per token (weights as stored, KV cache); x %.1f tokens/s = %.2f GB/s "
      "= %.1f%% of the %.1f GB/s this machine reads (%d threads)\n",
      bytes / 1e6, rate, bytes * rate / 1e9, 100.0 * bytes * rate / bw, bw / 1e9, max_threads());
  if (bytes * rate > bw)
    std::fprintf(stderr,
                 "          (above 100%%: the weights fit in the CPU caches, memory is not the limit)\n");
}

// The run of one model type: load (or make) it, then the prompt or the chat.
template <class P>
int run(const options& o, const P& p, const std::optional<io::hf_config>& cfg) {
  constexpr config::model_config C = P::config;
  using lm = model::causal_lm<C, model::default_policies<C, P::num>>;
  const auto t_load = clock_type::now();
  std::optional<io::loaded_model<C>> loaded;
  if (cfg) {
    loaded.emplace(load_checkpoint<C>(o.dir, cfg->params));
  } else {
    progress(20, std::string("making random weights for ") + p.name);
    auto r = io::random_model<C>(1, p.params);
    if (!r) throw fatal{exit_failed, r.error().message()};
    loaded.emplace(std::move(*r));
  }
  progress(80, "building the layers");
  auto made = lm::create(loaded->weights(), loaded->params());
  if (!made) throw fatal{exit_not_a_checkpoint, made.error().message()};
  const lm& m = *made;

  std::optional<text::tokenizer> tok;
  if (cfg && fs::exists(fs::path(o.dir) / "tokenizer.json")) {
    progress(90, "reading tokenizer.json");
    auto t = text::tokenizer::from_file(fs::path(o.dir) / "tokenizer.json");
    if (!t) throw fatal{exit_not_a_checkpoint, t.error().message()};
    tok = std::move(*t);
    if (tok->vocab_size() > static_cast<std::size_t>(C.vocab_size))
      std::fprintf(stderr,
                   "warning: tokenizer.json has %zu tokens, the model %d: text may encode to ids the model "
                   "cannot take\n",
                   tok->vocab_size(), C.vocab_size);
  }
  progress(100, std::string("ready: ") + p.name + (m.has_mtp() ? " with its MTP block" : "") + ", " +
                    (tok ? "tokenizer.json" : "no tokenizer: token ids in and out") + " (" +
                    seconds(seconds_since(t_load)) + ")");
  if (!cfg)
    std::fprintf(stderr,
                 "NOTE: random weights (--random-weights %s): the output is noise, not text; the "
                 "speeds are real\n",
                 o.random.c_str());
  if (!tok && (o.prompt || o.chat))
    throw fatal{exit_usage, std::string(o.prompt ? "--prompt" : "--chat") +
                                " needs a tokenizer.json beside the checkpoint: give --prompt-ids"};
  if (o.mtp && !m.has_mtp()) throw fatal{exit_failed, "--mtp: the checkpoint holds no MTP block"};

  // Stop tokens: the config's eos and the tokenizer's end of sentence.
  std::vector<std::int32_t> stop_ids;
  if (!o.ignore_eos) {
    stop_ids.push_back(loaded->params().eos_id);
    if (tok)
      if (auto id = tok->token_to_id(text::chat_tokens::eos); id && *id != stop_ids[0])
        stop_ids.push_back(*id);
  }
  const auto is_stop = [&](std::int32_t t) {
    return std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end();
  };

  // Prints a token as soon as it is drawn: its text, or its id without a tokenizer (the first id
  // of a line without a leading space).
  bool line_start = true;
  const auto emit = [&](std::int32_t t) {
    if (tok) {
      if (is_stop(t)) return;
      std::string bytes;
      if (tok->decode_bytes({&t, 1}, bytes).ok()) std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    } else {
      std::printf(line_start ? "%d" : " %d", t);
    }
    line_start = false;
    std::fflush(stdout);
  };

  const index_t capacity = o.chat ? o.context : 0;  // a prompt's run sizes its cache itself
  speed total;
  aligned_buffer forward_ws, sample_ws;
  std::vector<float> logits(C.vocab_size);

  // Feeds `prompt` after the `at` tokens the sequence holds and samples until a stop token or
  // max_tokens, streaming each token. Returns the tokens drawn.
  const auto generate_streaming = [&](typename lm::cache_type& cache, attn::sequence_id seq, index_t at,
                                      std::span<const std::int32_t> prompt) {
    std::vector<std::int32_t> out;
    model::sequence_input in{seq, prompt, model::logits_rows::last};
    const std::span<std::byte> ws =
        forward_ws.get(m.workspace_bytes(static_cast<index_t>(prompt.size()), cache.capacity()));
    const std::span<std::byte> sws = sample_ws.get(model::sample_workspace_bytes(C.vocab_size));
    for (index_t position = at + static_cast<index_t>(prompt.size());
         static_cast<index_t>(out.size()) < o.max_tokens; ++position) {
      if (position > cache.capacity())
        throw fatal{exit_failed, "the context is full (" + std::to_string(cache.capacity()) +
                                     " tokens): give a larger --context"};
      const auto t0 = clock_type::now();
      const status s =
          m.forward(cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, C.vocab_size}), ws);
      if (!s.ok()) throw fatal{exit_failed, s.message()};
      auto t = model::sample(logits, o.sampling, static_cast<std::uint64_t>(position), sws);
      if (!t) throw fatal{exit_failed, t.error().message()};
      const double dt = seconds_since(t0);
      if (out.empty()) {
        total.prefill_tokens += static_cast<index_t>(prompt.size());
        total.prefill_s += dt;
      } else {
        ++total.decode_tokens;
        total.decode_s += dt;
      }
      out.push_back(*t);
      emit(*t);
      if (is_stop(*t)) break;
      in.tokens = std::span<const std::int32_t>(&out.back(), 1);
    }
    return out;
  };

  // ---- a single prompt ----
  if (!o.chat) {
    std::vector<std::int32_t> ids;
    if (o.prompt_ids) {
      ids = *o.prompt_ids;
    } else {
      std::string prompt_text;
      if (o.raw) {
        prompt_text = std::string(text::chat_tokens::bos) + *o.prompt;
      } else {
        std::vector<text::chat_message> msgs;
        if (o.system) msgs.push_back(message(text::chat_role::system, *o.system));
        msgs.push_back(message(text::chat_role::user, *o.prompt));
        auto r = text::encode_chat(
            msgs, {.mode = o.think ? text::thinking_mode::thinking : text::thinking_mode::chat});
        if (!r) throw fatal{exit_failed, r.error().message()};
        prompt_text = std::move(*r);
      }
      auto r = tok->encode(prompt_text);
      if (!r) throw fatal{exit_failed, r.error().message()};
      ids = std::move(*r);
    }
    if (ids.empty()) throw fatal{exit_usage, "the prompt is empty"};
    const auto n = static_cast<index_t>(ids.size());
    auto cache = lm::make_cache(
        attn::kv_cache_options{.max_sequences = 2, .capacity = n + o.max_tokens + 2, .max_truncate = 1});
    if (!cache) throw fatal{exit_failed, cache.error().message()};
    const attn::sequence_id seq = *cache->open();
    if (!o.mtp) {
      const std::vector<std::int32_t> out = generate_streaming(*cache, seq, 0, ids);
      std::printf("\n");
      report<C>(total, n + static_cast<index_t>(out.size()) - 1);
      return exit_ok;
    }
    // --mtp: generate_speculative returns all tokens at once. Its prefill is timed apart, by a
    // second run of the prompt on another sequence, and taken out of its time.
    const auto t0 = clock_type::now();
    auto g = model::generate_speculative(m, *cache, seq, ids, model::stop_condition{stop_ids, o.max_tokens});
    if (!g) throw fatal{exit_failed, g.error().message()};
    const double call_s = seconds_since(t0);
    for (const std::int32_t t : g->tokens) emit(t);
    std::printf("\n");
    const attn::sequence_id probe = *cache->open();
    const model::sequence_input in{probe, ids, model::logits_rows::last};
    const auto t1 = clock_type::now();
    if (const status s = m.forward(*cache, {&in, 1}, tensor_view<float, 2>(logits.data(), {1, C.vocab_size}));
        !s.ok())
      throw fatal{exit_failed, s.message()};
    total = {n, static_cast<index_t>(g->tokens.size()) - 1, seconds_since(t1), 0};
    total.decode_s = call_s - total.prefill_s;
    std::fprintf(stderr, "\nMTP: %lld drafts, %lld accepted: acceptance rate %.1f%%\n",
                 static_cast<long long>(g->drafted), static_cast<long long>(g->accepted),
                 100.0 * g->acceptance());
    std::fprintf(stderr,
                 "(generate_speculative took %.3f s; its prefill is timed on a second run of the prompt)\n",
                 call_s);
    if (total.decode_s <= 0.0) total.decode_s = call_s;  // too short to tell apart: the whole call
    report<C>(total, n + static_cast<index_t>(g->tokens.size()) - 1);
    return exit_ok;
  }

  // ---- an interactive chat ----
  // Each turn renders the whole conversation and feeds the cache only what follows the tokens it
  // already holds; where an earlier turn renders differently (thinking dropped, a reply that
  // re-tokenizes otherwise) the sequence starts again from the beginning.
  auto cache = lm::make_cache(1, capacity);
  if (!cache) throw fatal{exit_failed, cache.error().message()};
  const attn::sequence_id seq = *cache->open();
  std::vector<text::chat_message> msgs;
  if (o.system) msgs.push_back(message(text::chat_role::system, *o.system));
  std::vector<std::int32_t> fed;  // the tokens the cache holds
  std::optional<std::string> first = o.prompt;
  std::fprintf(stderr, "chat: type a message, /exit or end of input to stop\n");
  for (;;) {
    std::string line;
    if (first) {
      line = *first;
      first.reset();
      std::fprintf(stderr, "> %s\n", line.c_str());
    } else {
      std::fprintf(stderr, "> ");
      std::fflush(stderr);
      if (!std::getline(std::cin, line) || line == "/exit") break;
      if (line.empty()) continue;
    }
    msgs.push_back(message(text::chat_role::user, line));
    auto rendered = text::encode_chat(
        msgs, {.mode = o.think ? text::thinking_mode::thinking : text::thinking_mode::chat});
    if (!rendered) throw fatal{exit_failed, rendered.error().message()};
    auto ids = tok->encode(*rendered);
    if (!ids) throw fatal{exit_failed, ids.error().message()};
    std::size_t keep = 0;
    while (keep < fed.size() && keep < ids->size() && fed[keep] == (*ids)[keep]) ++keep;
    if (keep == ids->size()) keep = 0;  // nothing new: run the whole conversation again
    if (keep < fed.size()) {
      if (const status s = cache->truncate(seq, 0); !s.ok()) throw fatal{exit_failed, s.message()};
      keep = 0;
    }
    const std::span<const std::int32_t> fresh = std::span<const std::int32_t>(*ids).subspan(keep);
    const speed before = total;
    const std::vector<std::int32_t> out = generate_streaming(*cache, seq, static_cast<index_t>(keep), fresh);
    std::printf("\n");
    std::fprintf(stderr, "[%lld prompt tokens at %.1f tokens/s, %lld new at %.1f tokens/s]\n",
                 static_cast<long long>(total.prefill_tokens - before.prefill_tokens),
                 static_cast<double>(total.prefill_tokens - before.prefill_tokens) /
                     (total.prefill_s - before.prefill_s),
                 static_cast<long long>(total.decode_tokens - before.decode_tokens),
                 total.decode_s > before.decode_s
                     ? static_cast<double>(total.decode_tokens - before.decode_tokens) /
                           (total.decode_s - before.decode_s)
                     : 0.0);
    fed = *ids;
    fed.insert(fed.end(), out.begin(), out.end() - 1);  // the last token drawn was not fed
    // The reply as the next turn renders it: reasoning before </think>, the answer after.
    std::vector<std::int32_t> reply(out.begin(), out.end());
    if (!reply.empty() && is_stop(reply.back())) reply.pop_back();
    auto said = tok->decode(reply);
    if (!said) throw fatal{exit_failed, said.error().message()};
    text::chat_message answer = message(text::chat_role::assistant, *said);
    if (const std::size_t cut = said->find(text::chat_tokens::think_end);
        o.think && cut != std::string::npos) {
      answer.reasoning = said->substr(0, cut);
      answer.content = said->substr(cut + text::chat_tokens::think_end.size());
    }
    msgs.push_back(std::move(answer));
  }
  if (total.prefill_tokens > 0) report<C>(total, static_cast<index_t>(fed.size()));
  return exit_ok;
}

// The preset a checkpoint directory holds, and its run.
int run_directory(const options& o) {
  const fs::path dir = o.dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw fatal{exit_not_a_checkpoint,
                dir.string() + (fs::exists(dir, ec) ? ": not a directory" : ": no such directory")};
  if (!fs::exists(dir / "config.json", ec))
    throw fatal{exit_not_a_checkpoint,
                dir.string() +
                    ": not a DeepSeek-V4 checkpoint (no config.json; a checkpoint directory holds "
                    "config.json, the safetensors and tokenizer.json)"};
  progress(0, "reading " + (dir / "config.json").string());
  auto cfg = io::read_hf_config(dir / "config.json");
  if (!cfg) throw fatal{exit_not_a_checkpoint, "not a DeepSeek-V4 checkpoint: " + cfg.error().message()};
  const std::string source = (dir / "config.json").string();
  std::optional<int> rc;
  int best = 1 << 30;
  std::string closest, why;
  each_preset([&](const auto& p) {
    if (rc) return;
    const status s = io::check_matches(cfg->shape, p.config, source);
    if (s.ok()) {
      progress(10, std::string("config.json matches the preset ") + p.name);
      rc = run(o, p, *cfg);
    } else if (const int d = distance(cfg->shape, p.config); d < best) {
      best = d;
      closest = p.name;
      why = s.message();
    }
  });
  if (rc) return *rc;
  throw fatal{exit_not_a_checkpoint,
              "config.json describes a V4 shape that matches no preset compiled into dsv4-run; "
              "the closest is " +
                  closest + " (" + std::to_string(best) + (best == 1 ? " field differs" : " fields differ") +
                  "), first: " + why};
}

int run_random(const options& o) {
  std::optional<int> rc;
  std::string names;
  each_preset([&](const auto& p) {
    if (p.random_name == nullptr || rc) return;
    if (o.random == p.random_name) rc = run(o, p, std::nullopt);
    names += std::string(names.empty() ? "" : ", ") + p.random_name;
  });
  if (!rc) throw fatal{exit_usage, "--random-weights " + o.random + ": not one of " + names};
  return *rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    if (o.threads > 0) set_num_threads(o.threads);
    return o.random.empty() ? run_directory(o) : run_random(o);
  } catch (const fatal& f) {
    std::fprintf(f.code == exit_ok ? stdout : stderr, f.code == exit_ok ? "%s" : "dsv4-run: %s\n",
                 f.message.c_str());
    return f.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4-run: %s\n", e.what());
    return exit_failed;
  }
}
