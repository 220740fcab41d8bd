// Fuzz target over the safetensors header parser, the checkpoint loader (naming, fused experts,
// inventory validation, dequantizing reads) and the config.json reader.
//
// Built two ways (docs/checkpoints.md):
//   - by default, a deterministic mutation loop: `io_fuzz --runs N [--seed S]` mutates valid seed
//     files (bit flips, byte inserts and deletes, chunk copies, truncation, the header length set
//     to extremes, JSON numbers replaced by extremes) and feeds each result to fuzz_one();
//     (`io_fuzz --write-seeds DIR` writes the seeds, a starting corpus for libFuzzer);
//   - with -DDSV4_LIBFUZZER=ON under clang, a libFuzzer target (LLVMFuzzerTestOneInput).
// Besides "no crash, no sanitizer report", fuzz_one() checks the parser's promises on every input
// it accepts (ranges inside the data section, sizes matching shapes, no overlaps) and aborts when
// one is broken.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/hf_config.hpp"
#include "dsv4/io/safetensors.hpp"
#include "dsv4/io/writer.hpp"
#include "io/io_test_util.hpp"

namespace {

using namespace dsv4;

[[noreturn]] void broken(const char* what, const std::string& name) {
  std::fprintf(stderr, "io_fuzz: accepted a header that breaks its contract: %s (%s)\n", what, name.c_str());
  std::abort();
}

// The promises of parse_header, checked independently on an accepted header.
void check_contract(const io::header& h, std::size_t file_size) {
  if (h.data_offset < 8 ||
      static_cast<std::size_t>(h.data_offset) + static_cast<std::size_t>(h.data_bytes) != file_size)
    broken("data section", "");
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  for (const auto& t : h.tensors) {
    if (t.begin < 0 || t.begin > t.end || t.end > h.data_bytes) broken("range", t.name);
    unsigned long long bytes = static_cast<unsigned long long>(io::dtype_size(t.type));
    for (auto e : t.shape) {
      if (e < 0) broken("negative extent", t.name);
      if (__builtin_mul_overflow(bytes, static_cast<unsigned long long>(e), &bytes) || bytes > INT64_MAX)
        broken("size overflow", t.name);
    }
    if (bytes != static_cast<unsigned long long>(t.end - t.begin)) broken("size", t.name);
    ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) broken("overlap", "");
}

volatile float sink = 0.0f;

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto f = io::safetensors_file::from_bytes(bytes, "fuzz");
  if (f) {
    check_contract(f->info(), size);
    for (const auto& t : f->tensors()) {
      const auto b = f->bytes(t);
      if (!b.empty())
        sink = sink + static_cast<float>(std::to_integer<int>(b.front()) + std::to_integer<int>(b.back()));
    }
    std::vector<io::safetensors_file> shards;
    shards.push_back(std::move(*f));
    auto c = io::checkpoint::from_files(std::move(shards), "fuzz");
    if (c) {
      int reads = 0;
      for (const auto& name : c->canonical_names()) {
        auto r = c->find(name);
        if (!r) std::abort();  // every listed name must be found
        if (reads++ < 64) {
          auto v = c->read_as_float(name);
          if (v && !v->data.empty()) sink = sink + v->data.front();
        }
      }
      (void)c->validate(test::micro_shape());
    }
  }
  // The same bytes as config.json text.
  auto cfg =
      io::parse_hf_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  if (cfg) sink = sink + cfg->params.rope_theta;
  return 0;
}

}  // namespace

#if defined(DSV4_LIBFUZZER)
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_one(data, size);
}
#else

namespace {

std::vector<std::vector<std::uint8_t>> seeds() {
  std::vector<std::vector<std::uint8_t>> out;
  auto add = [&](const std::vector<std::byte>& b) {
    std::vector<std::uint8_t> v(b.size());
    if (!b.empty()) std::memcpy(v.data(), b.data(), b.size());
    out.push_back(std::move(v));
  };
  add(test::sample_writer().serialize());
  io::safetensors_writer micro;
  if (!test::add_random_model(micro, test::micro_shape(), true, 1).ok()) std::abort();
  add(micro.serialize());
  // transformers' module names with fused experts.
  io::safetensors_writer hf;
  std::vector<float> z(2 * 2 * 32 * 4, 0.5f);
  (void)hf.add<float>("model.layers.0.mlp.experts.gate_up_proj", {2, 4, 32},
                      std::span<const float>(z.data(), 2 * 4 * 32));
  (void)hf.add<float>("model.layers.0.mlp.experts.down_proj", {2, 32, 2},
                      std::span<const float>(z.data(), 2 * 32 * 2));
  (void)hf.add<float>("model.layers.0.self_attn.sinks", {2}, std::span<const float>(z.data(), 2));
  (void)hf.add<float>("lm_head.weight", {4, 8}, std::span<const float>(z.data(), 32));
  add(hf.serialize());
  const std::string cfg =
      R"({"model_type":"deepseek_v4","vocab_size":16,"hidden_size":32,"num_hidden_layers":2,)"
      R"("num_attention_heads":2,"head_dim":16,"qk_rope_head_dim":8,"q_lora_rank":16,"o_groups":1,)"
      R"("o_lora_rank":8,"sliding_window":4,"compress_ratios":[0,4,0],)"
      R"("compress_rates":{"compressed_sparse_attention":4,"heavily_compressed_attention":8},)"
      R"("index_n_heads":1,"index_head_dim":8,"index_topk":2,"hc_mult":2,"hc_sinkhorn_iters":1,)"
      R"("n_routed_experts":2,"n_shared_experts":1,"num_experts_per_tok":1,"moe_intermediate_size":32,)"
      R"("num_hash_layers":1,"rope_scaling":{"type":"yarn","factor":16,)"
      R"("original_max_position_embeddings":65536,"beta_fast":32,"beta_slow":1},)"
      R"("quantization_config":{"quant_method":"fp8","weight_block_size":[128,128]},"expert_dtype":"fp4"})";
  out.emplace_back(cfg.begin(), cfg.end());
  return out;
}

void mutate(std::vector<std::uint8_t>& b, std::mt19937_64& rng) {
  auto pick = [&](std::size_t n) { return n == 0 ? std::size_t{0} : static_cast<std::size_t>(rng() % n); };
  const int kinds = 8;
  switch (rng() % kinds) {
    case 0:  // bit flips
      for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n && !b.empty(); ++i)
        b[pick(b.size())] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      break;
    case 1:  // insert bytes
      for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i)
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size() + 1)),
                 static_cast<std::uint8_t>(rng()));
      break;
    case 2:  // delete a run
      if (!b.empty()) {
        const std::size_t at = pick(b.size()), n = std::min(b.size() - at, 1 + pick(16));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
      }
      break;
    case 3: {  // header length to an extreme
      if (b.size() < 8) b.resize(8);
      const std::uint64_t extremes[] = {0,
                                        1,
                                        b.size() - 8,
                                        b.size() - 7,
                                        b.size(),
                                        std::uint64_t{1} << 63,
                                        ~std::uint64_t{0},
                                        ~std::uint64_t{0} - 7,
                                        io::max_header_bytes,
                                        io::max_header_bytes + 1,
                                        rng()};
      const std::uint64_t n = extremes[pick(std::size(extremes))];
      std::memcpy(b.data(), &n, 8);
      break;
    }
    case 4: {  // a JSON number replaced by an extreme one
      std::vector<std::size_t> digits;
      for (std::size_t i = 8; i < b.size() && i < 8 + 4096; ++i)
        if (b[i] >= '0' && b[i] <= '9' && (b[i - 1] < '0' || b[i - 1] > '9')) digits.push_back(i);
      if (digits.empty()) break;
      std::size_t at = digits[pick(digits.size())], end = at;
      while (end < b.size() && b[end] >= '0' && b[end] <= '9') ++end;
      const char* repl[] = {"0",
                            "1",
                            "-1",
                            "18446744073709551615",
                            "9223372036854775807",
                            "9223372036854775808",
                            "4294967296",
                            "1e309",
                            "0.5",
                            "99999999999999999999999",
                            "2147483648"};
      const std::string r = repl[pick(std::size(repl))];
      b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(end));
      b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), r.begin(), r.end());
      break;
    }
    case 5:  // truncate
      b.resize(pick(b.size() + 1));
      break;
    case 6: {  // copy a chunk over another place
      if (b.size() < 2) break;
      const std::size_t from = pick(b.size()), to = pick(b.size());
      const std::size_t n = std::min({b.size() - from, b.size() - to, 1 + pick(32)});
      std::memmove(b.data() + to, b.data() + from, n);
      break;
    }
    default: {  // a structural JSON character replaced
      const char structural[] = {'{', '}', '[', ']', '"', ':', ',', '\\', '\0'};
      if (!b.empty()) b[pick(b.size())] = static_cast<std::uint8_t>(structural[pick(std::size(structural))]);
      break;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  long long runs = 10000;
  unsigned long long seed = 1;
  std::string seed_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--runs")
      runs = std::atoll(argv[i + 1]);
    else if (a == "--seed")
      seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--write-seeds")
      seed_dir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: io_fuzz [--runs N] [--seed S] [--write-seeds DIR]\n");
      return 2;
    }
  }
  const auto base = seeds();
  if (!seed_dir.empty()) {  // a starting corpus for the libFuzzer build
    for (std::size_t i = 0; i < base.size(); ++i) {
      const std::string path = seed_dir + "/seed" + std::to_string(i);
      std::FILE* f = std::fopen(path.c_str(), "wb");
      if (f == nullptr || std::fwrite(base[i].data(), 1, base[i].size(), f) != base[i].size()) return 1;
      std::fclose(f);
    }
    std::printf("io_fuzz: wrote %zu seeds to %s\n", base.size(), seed_dir.c_str());
    return 0;
  }
  for (const auto& s : base) fuzz_one(s.data(), s.size());
  std::mt19937_64 rng(seed);
  long long accepted = 0;
  for (long long r = 0; r < runs; ++r) {
    std::vector<std::uint8_t> b = base[static_cast<std::size_t>(r) % base.size()];
    for (int m = 0, n = rng() % 2 == 0 ? 1 : 2 + static_cast<int>(rng() % 3); m < n; ++m) mutate(b, rng);
    accepted +=
        io::parse_header(std::span<const std::byte>(reinterpret_cast<const std::byte*>(b.data()), b.size()),
                         "count")
            .ok();
    fuzz_one(b.data(), b.size());
  }
  std::printf("io_fuzz: %lld inputs (seed %llu), %lld with a valid safetensors header, no contract broken\n",
              runs, seed, accepted);
  return 0;
}
#endif
