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

#include <unistd.h>

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
  std::string random;     // --random-weights: tiny, peer-small, peer-small-fp8, peer-small-fp4
  std::string tokenizer;  // --tokenizer: a tokenizer.json other than the checkpoint's
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
    "          --tokenizer FILE   a tokenizer.json other than DIR/tokenizer.json\n"
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
    else if (a == "--tokenizer")
      o.tokenizer = std::string(value());
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

// The tensors' progress on stderr, driven by io::load_progress. On a terminal one line, redrawn
// with '\r' whenever its percent changes:
//        tensors [#############-----------------]  45%   73/162
// elsewhere (a log, a test) a plain line at 0, 25, 50, 75 and 100%, so logs stay short.
class tensor_bar {
 public:
  tensor_bar() : terminal_(::isatty(STDERR_FILENO) == 1) {}
  tensor_bar(const tensor_bar&) = delete;
  tensor_bar& operator=(const tensor_bar&) = delete;
  ~tensor_bar() { end_line(); }

  bool operator()(std::int64_t done, std::int64_t total, std::string_view /*name*/) {
    const auto percent = static_cast<int>(total > 0 ? done * 100 / total : 100);
    if (terminal_) {
      if (percent == shown_ && done != total) return true;
      constexpr int width = 30;
      const int filled = percent * width / 100;
      std::fprintf(stderr, "\r       tensors [%.*s%.*s] %3d%%  %*lld/%lld", filled, bar_full, width - filled,
                   bar_empty, percent, digits(total), static_cast<long long>(done),
                   static_cast<long long>(total));
      open_ = done != total;
      if (!open_) std::fputc('\n', stderr);
    } else {
      if (percent / 25 == shown_ / 25 && shown_ >= 0) return true;
      std::fprintf(stderr, "       tensors %3d%%  %*lld/%lld\n", percent, digits(total),
                   static_cast<long long>(done), static_cast<long long>(total));
    }
    shown_ = percent;
    std::fflush(stderr);
    return true;
  }
  // Ends a bar left open (a load that failed part way), so that the next message starts a line.
  void end_line() {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
  }

 private:
  static int digits(std::int64_t n) { return static_cast<int>(std::to_string(n).size()); }

  static constexpr const char* bar_full = "##############################";
  static constexpr const char* bar_empty = "------------------------------";
  bool terminal_;
  bool open_ = false;  // a terminal line without its '\n' yet
  int shown_ = -1;     // the percent last drawn
};

// The checkpoint in `dir` as model C, the tensors' progress on stderr; a file that does not hold a
// model C is fatal (exit 2). bind validates each tensor as it binds it (once per load).
template <config::model_config C>
io::loaded_model<C> load_checkpoint(const fs::path& dir, const config::model_params& params) {
  const auto bad = [&](const status& s) { return fatal{exit_not_a_checkpoint, s.message()}; };
  auto ckpt = io::checkpoint::open(dir);
  if (!ckpt) throw bad(ckpt.error());
  progress(20, "mapped " + std::to_string(ckpt->shards().size()) + " shard(s) of " + dir.string() +
                   ": validating and binding " + std::to_string(ckpt->canonical_names().size()) + " tensors");
  tensor_bar bar;
  auto loaded = io::loaded_model<C>::bind(std::move(*ckpt), params, io::mtp_policy::automatic, bar);
  bar.end_line();
  if (!loaded) throw bad(loaded.error());
  return std::move(*loaded);
}

// ---- the run ---------------------------------------------------------------------------------------

struct speed {
  index_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_s = 0, decode_s = 0;
};

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
  // Every weight the token uses as stored, the KV cache the sequence holds (config/accounting.hpp).
  const double bytes = config::decode_read_bytes(C, tokens).total(),
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

  // The tokenizer: --tokenizer, else the checkpoint's tokenizer.json when it has one.
  std::optional<text::tokenizer> tok;
  fs::path tok_path;
  if (!o.tokenizer.empty())
    tok_path = o.tokenizer;
  else if (cfg && fs::exists(fs::path(o.dir) / "tokenizer.json"))
    tok_path = fs::path(o.dir) / "tokenizer.json";
  if (!tok_path.empty()) {
    progress(90, "reading " + tok_path.string());
    auto t = text::tokenizer::from_file(tok_path);
    if (!t) throw fatal{exit_not_a_checkpoint, t.error().message()};
    tok = std::move(*t);
    if (tok->vocab_size() > static_cast<std::size_t>(C.vocab_size))
      std::fprintf(stderr,
                   "warning: the tokenizer has %zu tokens, the model %d: text may encode to ids the model "
                   "cannot take\n",
                   tok->vocab_size(), C.vocab_size);
  }
  progress(100, std::string("ready: ") + p.name + (m.has_mtp() ? " with its MTP block" : "") + ", " +
                    (tok ? tok_path.filename().string() : "no tokenizer: token ids in and out") + " (" +
                    seconds(seconds_since(t_load)) + ")");
  if (!cfg)
    std::fprintf(stderr,
                 "NOTE: random weights (--random-weights %s): the output is noise, not text; the "
                 "speeds are real\n",
                 o.random.c_str());
  if (!tok && (o.prompt || o.chat))
    throw fatal{exit_usage,
                std::string(o.prompt ? "--prompt" : "--chat") +
                    " needs a tokenizer.json beside the checkpoint (or --tokenizer): give --prompt-ids"};
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

  // generate's on_token: prints each token as soon as it is drawn, its text, or its id without a
  // tokenizer (the first id of a line without a leading space). generate times itself without it.
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
  const auto encode = [&](const std::string& s) {
    auto r = tok->encode(s);
    if (!r) throw fatal{exit_failed, r.error().message()};
    return std::move(*r);
  };
  const text::chat_options chat_format{.mode = o.think ? text::thinking_mode::thinking
                                                       : text::thinking_mode::chat};
  // The first id of `ids` the model cannot take (the text held a byte or token past its
  // vocabulary: a tokenizer larger than the model), or nullopt.
  const auto outside_vocab = [&](std::span<const std::int32_t> ids) -> std::optional<std::int32_t> {
    for (const std::int32_t id : ids)
      if (id < 0 || id >= C.vocab_size) return id;
    return std::nullopt;
  };
  const auto vocab_message = [&](std::int32_t id) {
    const auto spelling = tok ? tok->id_to_token(id) : std::nullopt;
    return "the text encodes to token id " + std::to_string(id) +
           (spelling ? " ('" + std::string(*spelling) + "')" : std::string()) +
           ", outside the model's vocabulary of " + std::to_string(C.vocab_size);
  };

  speed total;

  // ---- a single prompt ----
  if (!o.chat) {
    std::vector<std::int32_t> ids;
    if (o.prompt_ids) {
      ids = *o.prompt_ids;
    } else if (o.raw) {
      ids = encode(std::string(text::chat_tokens::bos) + *o.prompt);
    } else {
      std::vector<text::chat_message> msgs;
      if (o.system) msgs.push_back(message(text::chat_role::system, *o.system));
      msgs.push_back(message(text::chat_role::user, *o.prompt));
      auto r = text::encode_chat(msgs, chat_format);
      if (!r) throw fatal{exit_failed, r.error().message()};
      ids = encode(*r);
    }
    if (ids.empty()) throw fatal{exit_usage, "the prompt is empty"};
    if (const auto bad = outside_vocab(ids); bad && !o.prompt_ids)
      throw fatal{exit_failed, vocab_message(*bad)};
    const auto n = static_cast<index_t>(ids.size());
    // max_truncate 1: generate_speculative drops a rejected draft.
    auto cache = lm::make_cache(
        attn::kv_cache_options{.max_sequences = 1, .capacity = n + o.max_tokens + 2, .max_truncate = 1});
    if (!cache) throw fatal{exit_failed, cache.error().message()};
    const attn::sequence_id seq = *cache->open();
    const model::stop_condition stop{stop_ids, o.max_tokens};
    auto g = o.mtp ? model::generate_speculative(m, *cache, seq, ids, stop, emit)
                   : model::generate(m, *cache, seq, ids, o.sampling, stop, emit);
    if (!g) throw fatal{exit_failed, g.error().message()};
    std::printf("\n");
    total = {n, static_cast<index_t>(g->tokens.size()) - 1, g->prefill_seconds, g->decode_seconds};
    if (o.mtp)
      std::fprintf(stderr,
                   "\nMTP: %lld drafts, %lld accepted: acceptance rate %.1f%% (the prefill below includes "
                   "the MTP block over the prompt)\n",
                   static_cast<long long>(g->drafted), static_cast<long long>(g->accepted),
                   100.0 * g->acceptance());
    report<C>(total, n + static_cast<index_t>(g->tokens.size()) - 1);
    return exit_ok;
  }

  // ---- an interactive chat ----
  // The conversation is kept as tokens: those the cache holds, then the last token drawn (drawn,
  // not fed). Each turn renders the whole conversation as text; its prompt is the conversation's
  // tokens as far as their text starts that rendering, then the encoding of the rest (the end of
  // the reply, the user's message, the assistant's opening), and the cache is fed only what it
  // does not hold. Re-encoding the whole rendering instead would give other ids wherever the model
  // drew tokens that BPE would not choose for their text (two tokens where a merge makes one), and
  // the cache would be fed again from there.
  // In thinking mode the rendering drops the reasoning of earlier replies: it differs from the
  // conversation from the last reply on. The cache then goes back to the last assistant opening,
  // which max_truncate = --max-tokens allows (the window ring keeps that many more rows).
  const index_t capacity = o.context;
  auto cache = lm::make_cache(attn::kv_cache_options{
      .max_sequences = 1, .capacity = capacity, .max_truncate = std::min(capacity, o.max_tokens)});
  if (!cache) throw fatal{exit_failed, cache.error().message()};
  const attn::sequence_id seq = *cache->open();
  std::vector<text::chat_message> msgs;
  if (o.system) msgs.push_back(message(text::chat_role::system, *o.system));
  std::vector<std::int32_t> conversation;
  std::optional<std::string> first = o.prompt;
  std::fprintf(stderr, "chat: type a message, /exit or end of input to stop\n");
  for (int turn = 1;;) {
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
    auto rendered = text::encode_chat(msgs, chat_format);
    if (!rendered) throw fatal{exit_failed, rendered.error().message()};
    // The conversation's first `same` tokens spell the rendering's first `at` bytes.
    std::size_t same = 0, at = 0;
    for (std::string piece; same < conversation.size(); ++same, at += piece.size()) {
      piece.clear();
      if (const status s = tok->decode_bytes({&conversation[same], 1}, piece); !s.ok())
        throw fatal{exit_failed, s.message()};
      if (rendered->compare(at, piece.size(), piece) != 0) break;
    }
    std::vector<std::int32_t> ids(conversation.begin(),
                                  conversation.begin() + static_cast<std::ptrdiff_t>(same));
    const std::vector<std::int32_t> rest = encode(rendered->substr(at));
    ids.insert(ids.end(), rest.begin(), rest.end());
    if (const auto bad = outside_vocab(ids)) {  // the model cannot read it: this message is dropped
      std::fprintf(stderr, "dsv4-run: %s; type another message\n", vocab_message(*bad).c_str());
      msgs.pop_back();
      continue;
    }
    // The tokens the cache holds that the new prompt starts with; the cache drops the others (all
    // of them where it cannot go back so far).
    const auto held = static_cast<std::size_t>(*cache->tokens(seq, 0));
    std::size_t keep = std::min(same, held);
    if (keep == ids.size()) keep = 0;  // nothing new (a message always adds some): feed it all again
    if (keep < held) {
      if (held - keep > static_cast<std::size_t>(cache->max_truncate())) keep = 0;
      if (const status s = cache->truncate(seq, static_cast<index_t>(keep)); !s.ok())
        throw fatal{exit_failed, s.message()};
    }
    const std::span<const std::int32_t> fresh = std::span<const std::int32_t>(ids).subspan(keep);
    // Each token drawn but the last is fed: the reply may take what the cache has left.
    const index_t room = capacity - static_cast<index_t>(ids.size()) + 1;
    if (room < 1)
      throw fatal{exit_failed,
                  "the context is full (" + std::to_string(capacity) + " tokens): give a larger --context"};
    const model::stop_condition stop{stop_ids, std::min(o.max_tokens, room)};
    auto g = model::generate(m, *cache, seq, fresh, o.sampling, stop, emit);
    if (!g) throw fatal{exit_failed, g.error().message()};
    std::printf("\n");
    line_start = true;
    const auto prefilled = static_cast<index_t>(fresh.size()), drawn = static_cast<index_t>(g->tokens.size());
    total.prefill_tokens += prefilled;
    total.prefill_s += g->prefill_seconds;
    total.decode_tokens += drawn - 1;
    total.decode_s += g->decode_seconds;
    conversation = std::move(ids);
    conversation.insert(conversation.end(), g->tokens.begin(), g->tokens.end());

    // The reply as the next turn renders it: its bytes as drawn (a reply cut inside a character
    // stays cut), so that the conversation's text starts with its tokens' text. In thinking mode
    // the reasoning is the text before the first </think> and the answer the text after it; a
    // reply cut off before </think> is all reasoning, with an empty answer.
    std::vector<std::int32_t> reply = g->tokens;
    if (!reply.empty() && is_stop(reply.back())) reply.pop_back();
    std::string reply_text;
    if (const status s = tok->decode_bytes(reply, reply_text); !s.ok()) throw fatal{exit_failed, s.message()};
    text::chat_message answer = message(text::chat_role::assistant, reply_text);
    std::string reasoning_note;
    if (o.think) {
      const std::size_t cut = reply_text.find(text::chat_tokens::think_end);
      const std::size_t end =
          cut == std::string::npos ? reply_text.size() : cut + text::chat_tokens::think_end.size();
      answer.reasoning = reply_text.substr(0, std::min(cut, reply_text.size()));
      answer.content = reply_text.substr(end);
      // The tokens up to the one that ends </think>.
      std::size_t spelled = 0, thought = 0;
      for (std::string piece; thought < reply.size() && spelled < end; ++thought, spelled += piece.size()) {
        piece.clear();
        (void)tok->decode_bytes({&reply[thought], 1}, piece);
      }
      reasoning_note = ", " + std::to_string(thought) + " of them reasoning" +
                       (cut == std::string::npos ? " (no </think>)" : "");
    }
    msgs.push_back(std::move(answer));
    std::fprintf(stderr,
                 "[turn %d: %lld prompt tokens prefilled (%zu reused from the cache) at %.1f tokens/s, "
                 "%lld new at %.1f tokens/s%s]\n",
                 turn++, static_cast<long long>(prefilled), keep,
                 static_cast<double>(prefilled) / g->prefill_seconds, static_cast<long long>(drawn),
                 drawn > 1 ? static_cast<double>(drawn - 1) / g->decode_seconds : 0.0,
                 reasoning_note.c_str());
    if (drawn == room && room < o.max_tokens && !is_stop(g->tokens.back()))
      throw fatal{exit_failed,
                  "the context is full (" + std::to_string(capacity) + " tokens): give a larger --context"};
  }
  if (total.prefill_tokens > 0) report<C>(total, *cache->tokens(seq, 0));
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
