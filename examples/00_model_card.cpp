// 00_model_card: parameter counts, KV-cache bytes and decode FLOPs of DeepSeek-V4-Flash, -Pro and
// V3.2, all computed at compile time from the presets (docs/accounting.md explains the method).
#include <cstdint>
#include <cstdio>

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/presets.hpp"

namespace {

using namespace dsv4::config;

struct named_model {
  const char* name;
  const model_config& config;
};

constexpr named_model models[] = {{"V4-Flash", v4_flash}, {"V4-Pro", v4_pro}, {"V3.2", v32}};

double giga(std::int64_t x) { return static_cast<double>(x) / 1e9; }
double percent(double a, double b) { return 100.0 * a / b; }

void print_parameters() {
  std::printf("Parameters (logical: an FP4 value counts one; embedding and head in both columns)\n");
  std::printf("%-10s %12s %12s %14s %14s\n", "model", "total", "activated", "total +MTP", "activ. +MTP");
  for (const named_model& m : models) {
    const param_counts main = count_params(m.config), all = count_params(m.config, mtp_mode::include);
    std::printf("%-10s %10.2f B %10.2f B %12.2f B %12.2f B\n", m.name, giga(main.total), giga(main.activated),
                giga(all.total), giga(all.activated));
  }
}

void print_context_table() {
  struct context {
    const char* label;
    std::int64_t tokens;
  };
  constexpr context contexts[] = {{"4K", 4096}, {"64K", 65536}, {"128K", 131072}, {"1M", 1048576}};
  std::printf(
      "\nPer sequence: KV cache in the released format (backbone): KV = all a cache allocates, entries = "
      "the\n"
      "compressed entries and index keys alone (what grows with the context; spec 8.3 counts these).\n"
      "Per decoded token: attention = core + indexer (raw FLOPs); token = whole token in FP8-equivalent "
      "FLOPs.\n");
  std::printf("%-7s %-10s %9s %10s %8s %11s %8s %12s %8s\n", "context", "model", "KV GB", "entries GB",
              "vs V3.2", "attn GFLOP", "vs V3.2", "token GFLOP", "vs V3.2");
  for (const context& ctx : contexts) {
    const auto base_kv = static_cast<double>(kv_sequence_bytes(v32, v32.cache_format, ctx.tokens).total());
    const token_flops base = decode_flops(v32, ctx.tokens);
    for (const named_model& m : models) {
      const kv_bytes bytes = kv_sequence_bytes(m.config, m.config.cache_format, ctx.tokens).backbone();
      const auto kv = static_cast<double>(bytes.total());
      const token_flops f = decode_flops(m.config, ctx.tokens);
      std::printf("%-7s %-10s %9.3f %10.3f %7.1f%% %11.2f %7.1f%% %12.2f %7.1f%%\n",
                  &m == models ? ctx.label : "", m.name, kv / 1e9, static_cast<double>(bytes.entries()) / 1e9,
                  percent(kv, base_kv), giga(f.attention()),
                  percent(static_cast<double>(f.attention()), static_cast<double>(base.attention())),
                  f.fp8_equivalent() / 1e9, percent(f.fp8_equivalent(), base.fp8_equivalent()));
    }
  }
}

}  // namespace

int main() {
  std::printf("DeepSeek model card (dsv4 accounting)\n\n");
  print_parameters();
  std::printf("\nAsymptotic KV bytes per token (released format, backbone):");
  for (const named_model& m : models)
    std::printf("  %s %.2f", m.name, kv_bytes_per_token(m.config, m.config.cache_format));
  std::printf("\n");
  print_context_table();
  return 0;
}
