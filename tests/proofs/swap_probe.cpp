// The kernels that call core/index_math.hpp's functions, run on fixed random inputs, one line per
// kernel: its name and a hash of its output's bits. tests/proofs/swap.cmake builds this program
// once as is and once per wrong variant of an index function (a copy of index_math.hpp with that
// function's body replaced, found before the real one on the include path; built with
// DSV4_SWAP_ONLY naming the one kernel to build), and tests/proofs/swap_test.cmake requires that
// each variant changes the line of the kernel that calls the function: the proofs are about the
// code the kernels run, not about a copy.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "dsv4/attn/attention.hpp"
#include "dsv4/attn/compressor.hpp"
#include "dsv4/config/presets.hpp"
#include "dsv4/core/linear.hpp"
#include "kv_synthesis.hpp"

// DSV4_SWAP_ONLY: 0 builds every kernel, k only the k-th (1 fp4_dequantize, 2 fp4_gemv, 3 fp8_gemv,
// 4 compressor, 5 hca_step), so that a variant's build compiles what it changes.
#ifndef DSV4_SWAP_ONLY
#define DSV4_SWAP_ONLY 0
#endif

namespace {

using namespace dsv4;

[[maybe_unused]] std::vector<float> normal(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void print(const char* kernel, std::span<const float> out) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the bits
  for (const float f : out) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    for (int b = 0; b < 4; ++b) h = (h ^ ((u >> (8 * b)) & 0xffu)) * 1099511628211ull;
  }
  std::printf("%s %016llx\n", kernel, static_cast<unsigned long long>(h));
}

bool fail(const char* what, const status& s) {
  std::fprintf(stderr, "swap_probe: %s: %s\n", what, s.to_string().c_str());
  return false;
}

#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 1
// fp4_nibble: an FP4 matrix decoded element by element (the scalar dequantization).
bool fp4_dequantize() {
  const index_t out = 4, in = 64;
  std::mt19937 rng(11);
  std::vector<fp4x2> w(static_cast<std::size_t>(out * in / 2));
  for (auto& c : w) c.bits = static_cast<std::uint8_t>(rng() & 0xff);
  const std::vector<ue8m0> s(std::size_t(out * in / 32), ue8m0::from_exponent(0));
  std::vector<float> y(static_cast<std::size_t>(out * in));
  const status st = run<cpu>(dequantize_fp4_op::params{
      {w.data(), {out, in / 2}}, {s.data(), {out, in / 32}}, {y.data(), {out, in}}});
  if (!st.ok()) return fail("fp4_dequantize", st);
  print("fp4_dequantize", y);
  return true;
}
#endif

#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 2
// fp4_lane_column: an FP4 matrix times x (x permuted to the decoder's lane order).
bool fp4_gemv() {
  const index_t out = 8, in = 64;
  std::mt19937 rng(1);
  std::vector<fp4x2> w(static_cast<std::size_t>(out * in / 2));
  for (auto& c : w) c.bits = static_cast<std::uint8_t>(rng() & 0xff);
  std::vector<ue8m0> s(std::size_t(out * in / 32), ue8m0::from_exponent(0));
  const auto x = normal(std::size_t(in), 2);
  std::vector<float> y(static_cast<std::size_t>(out));
  const status st =
      linear(fp4_matrix{{w.data(), {out, in / 2}}, {s.data(), {out, in / 32}}},
             tensor_view<const float, 2>(x.data(), {1, in}), tensor_view<float, 2>(y.data(), {1, out}));
  if (!st.ok()) return fail("fp4_gemv", st);
  print("fp4_gemv", y);
  return true;
}
#endif

#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 3
// block_scale_index and fp8_lane_column: an FP8 matrix of 2 x 2 scale blocks, each its own
// scale, times x.
bool fp8_gemv() {
  const index_t n = 256;
  std::mt19937 rng(3);
  std::vector<fp8_e4m3> w(static_cast<std::size_t>(n * n));
  for (auto& c : w) c = fp8_e4m3(static_cast<float>(static_cast<int>(rng() % 15) - 7));
  const std::vector<ue8m0> s = {ue8m0::from_exponent(-3), ue8m0::from_exponent(1), ue8m0::from_exponent(4),
                                ue8m0::from_exponent(-1)};
  const auto x = normal(std::size_t(n), 4);
  std::vector<float> y(static_cast<std::size_t>(n));
  const status st =
      linear(fp8_matrix{{w.data(), {n, n}}, {s.data(), {2, 2}}},
             tensor_view<const float, 2>(x.data(), {1, n}), tensor_view<float, 2>(y.data(), {1, n}));
  if (!st.ok()) return fail("fp8_gemv", st);
  print("fp8_gemv", y);
  return true;
}
#endif

#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 4
// pool_channel: the overlapping compressor's entries over 16 tokens.
bool compressor() {
  const attn::compressor_shape shape{4, 8, true};
  const index_t d = 16, tokens = 16, ch = shape.channels();
  const auto wkv = normal(std::size_t(ch * d), 5), wgate = normal(std::size_t(ch * d), 6),
             ape = normal(std::size_t(shape.ratio * ch), 7), x = normal(std::size_t(tokens * d), 8);
  const std::vector<float> norm(std::size_t(shape.dim), 1.0f);
  const attn::compressor_weights<> w{f32_matrix{{wkv.data(), {ch, d}}},
                                     f32_matrix{{wgate.data(), {ch, d}}},
                                     {ape.data(), {shape.ratio, ch}},
                                     {norm.data(), {shape.dim}}};
  const auto rope = attn::rope_table::for_layer(config::model_params{}, 8, true);
  std::vector<float> tails(std::size_t(attn::compressor_state::floats(shape, shape.rows())));
  const attn::compressor_state state(shape, shape.rows(), tails.data(), tails.data() + tails.size() / 2);
  std::vector<float> kv(static_cast<std::size_t>(ch)), gate(static_cast<std::size_t>(ch)),
      entry(static_cast<std::size_t>(shape.dim)), entries;
  for (index_t t = 0; t < tokens; ++t) {
    const tensor_view<const float, 2> xt(x.data() + t * d, {1, d});
    if (const status st = linear(w.wkv, xt, tensor_view<float, 2>(kv.data(), {1, ch})); !st.ok())
      return fail("compressor", st);
    if (const status st = linear(w.wgate, xt, tensor_view<float, 2>(gate.data(), {1, ch})); !st.ok())
      return fail("compressor", st);
    if (state.step(w, rope, 1e-6f, t, kv, gate, entry))
      entries.insert(entries.end(), entry.begin(), entry.end());
  }
  print("compressor", entries);
  return true;
}
#endif

#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 5
// visible_entries: an HCA step of the tiny model at position 255, the last before its third entry.
bool hca_step() {
  constexpr config::model_config C = config::tiny_v4;
  constexpr attn::shape S = attn::shape_of<C>;
  using P = attn::hca;
  const index_t context = 256, t = context - 1;
  auto cache = attn::kv_cache_for<C>::create(1, context, {attn::kv_geometry<S, P>(context)});
  if (!cache) return fail("hca_step", cache.error());
  const auto seq = cache->open();
  if (!seq) return fail("hca_step", seq.error());
  if (const status st = bench::synthesize_kv(*cache, *seq, context); !st.ok()) return fail("hca_step", st);
  const auto g = cache->geometry(0);
  workspace_layout size;
  attn::attend_buffers<S, P>::carve(size, g.window, context / g.ratio);
  std::vector<std::byte> memory(std::size_t(size.used) + workspace_align);
  workspace_layout l{memory.data() + (workspace_align - std::uintptr_t(memory.data()) % workspace_align)};
  const auto buffers = attn::attend_buffers<S, P>::carve(l, g.window, context / g.ratio);
  const auto q = normal(std::size_t(C.n_heads * C.head_dim), 9), sink = normal(std::size_t(C.n_heads), 10);
  std::vector<float> out(q.size());
  const status st =
      attn::attend_cached<S, P>(cache->view(0, *seq), buffers, t, {q.data(), {C.n_heads, C.head_dim}}, {}, {},
                                {sink.data(), {C.n_heads}}, {out.data(), {C.n_heads, C.head_dim}});
  if (!st.ok()) return fail("hca_step", st);
  print("hca_step", out);
  return true;
}
#endif

}  // namespace

int main() {
  bool ok = true;
#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 1
  ok = ok && fp4_dequantize();
#endif
#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 2
  ok = ok && fp4_gemv();
#endif
#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 3
  ok = ok && fp8_gemv();
#endif
#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 4
  ok = ok && compressor();
#endif
#if DSV4_SWAP_ONLY == 0 || DSV4_SWAP_ONLY == 5
  ok = ok && hca_step();
#endif
  return ok ? 0 : 1;
}
