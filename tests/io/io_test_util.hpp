// Shared helpers of the io tests: a small valid safetensors file built in memory, scratch
// directories, byte surgery on headers, and a count of a file's live memory mappings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "dsv4/io/inventory.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/io/writer.hpp"

namespace dsv4::test {

// A fresh, empty directory under the system temp directory, removed with the object.
struct scratch_dir {
  std::filesystem::path path;
  explicit scratch_dir(const std::string& tag) {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("dsv4_io_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
};

inline void write_file(const std::filesystem::path& p, const std::vector<std::byte>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}
inline std::vector<std::byte> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

// One tensor of every dtype the reader supports, with fixed pseudo-random contents.
inline io::safetensors_writer sample_writer() {
  io::safetensors_writer w;
  std::mt19937 rng(7);
  std::vector<float> f(6);
  for (auto& x : f) x = std::uniform_real_distribution<float>(-2, 2)(rng);
  std::vector<bf16> b(4);
  for (auto& x : b) x = bf16(std::uniform_real_distribution<float>(-2, 2)(rng));
  std::vector<fp8_e4m3> q(8);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = fp8_e4m3::from_bits(static_cast<std::uint8_t>(i * 13));
  std::vector<ue8m0> s{ue8m0::from_bits(120), ue8m0::from_bits(130)};
  std::vector<fp4x2> p(4);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = fp4x2::from_bits(static_cast<std::uint8_t>(0x1f * i));
  std::vector<std::int32_t> i32{1, -2, 3};
  std::vector<std::int64_t> i64{5, 6};
  (void)w.add<float>("a.f32", {2, 3}, f);
  (void)w.add<bf16>("b.bf16", {4}, b);
  (void)w.add<fp8_e4m3>("c.fp8", {2, 4}, q);
  (void)w.add<ue8m0>("d.scale", {1, 2}, s);
  (void)w.add<fp4x2>("e.fp4", {2, 2}, p);
  (void)w.add<std::int32_t>("f.i32", {3}, i32);
  (void)w.add<std::int64_t>("g.i64", {1, 2}, i64);
  w.set_metadata("format", "pt");
  return w;
}

// The JSON text of a file's header and the file rebuilt around a replacement header (data kept).
inline std::string header_text(const std::vector<std::byte>& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return std::string(reinterpret_cast<const char*>(file.data()) + 8, static_cast<std::size_t>(n));
}
inline std::vector<std::byte> with_header(const std::vector<std::byte>& file, const std::string& json) {
  const std::uint64_t old_n = header_text(file).size();
  std::vector<std::byte> out(8 + json.size());
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, json.data(), json.size());
  out.insert(out.end(), file.begin() + static_cast<std::ptrdiff_t>(8 + old_n), file.end());
  return out;
}

// Lines of /proc/self/maps naming `p` (0 where /proc is unavailable).
inline int live_mappings(const std::filesystem::path& p) {
  std::ifstream maps("/proc/self/maps");
  const std::string name = std::filesystem::absolute(p).string();
  int n = 0;
  for (std::string line; std::getline(maps, line);)
    if (line.size() >= name.size() && line.compare(line.size() - name.size(), name.size(), name) == 0) ++n;
  return n;
}

// A very small V4 shape with every tensor kind: layers SWA/hash and CSA/score, an HCA-sized ratio
// that no layer uses, an MTP block, FP8 linears and FP4 experts (official layout).
inline io::model_shape micro_shape() {
  io::model_shape s;
  s.vocab_size = 16;
  s.d_model = 32;
  s.n_layers = 2;
  s.n_heads = 2;
  s.head_dim = 16;
  s.rope_dim = 8;
  s.nope_dim = 8;
  s.q_lora_rank = 16;
  s.o_groups = 1;
  s.o_lora_rank = 8;
  s.window = 4;
  s.csa_ratio = 4;
  s.hca_ratio = 8;
  s.compress_ratios[0] = 0;
  s.compress_ratios[1] = 4;
  s.compress_ratios[2] = 0;
  s.n_schedule = 3;
  s.index_n_heads = 1;
  s.index_head_dim = 8;
  s.index_topk = 2;
  s.hc_mult = 2;
  s.hc_sinkhorn_iters = 1;
  s.n_routed_experts = 2;
  s.n_shared_experts = 1;
  s.n_experts_per_tok = 1;
  s.moe_inter_dim = 32;
  s.n_hash_layers = 1;
  s.n_mtp_layers = 1;
  s.linear_format = config::weight_format::fp8_e4m3_block128;
  s.expert_format = config::weight_format::fp4_e2m1_block32;
  s.other_format = config::weight_format::bf16;
  return s;
}

// Adds every tensor of shape `s` (official names) with seeded random values: quantized linears
// through add_linear, dense tensors in other_format (f32 or bf16), tid2eid rows (r + j) mod E.
inline status add_random_model(io::safetensors_writer& w, const io::model_shape& s, bool with_mtp,
                               unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (const auto& e : io::expected_tensors(s, with_mtp)) {
    std::int64_t n = 1;
    for (auto x : e.shape) n *= x;
    switch (e.kind) {
      case io::tensor_kind::scale:
        break;  // written with its weight
      case io::tensor_kind::fp8_weight:
      case io::tensor_kind::fp4_weight: {
        const bool fp4 = e.kind == io::tensor_kind::fp4_weight;
        const std::int64_t rows = e.shape[0], cols = fp4 ? 2 * e.shape[1] : e.shape[1];
        std::vector<float> v(static_cast<std::size_t>(rows * cols));
        for (auto& x : v) x = normal(rng);
        const auto prefix = e.name.substr(0, e.name.size() - 7);
        DSV4_TRY(w.add_linear(
            prefix, fp4 ? config::weight_format::fp4_e2m1_block32 : config::weight_format::fp8_e4m3_block128,
            tensor_view<const float, 2>(v.data(), {rows, cols})));
        break;
      }
      case io::tensor_kind::dense:
      case io::tensor_kind::fp32: {
        std::vector<float> v(static_cast<std::size_t>(n));
        for (auto& x : v) x = normal(rng);
        if (e.kind == io::tensor_kind::dense && s.other_format == config::weight_format::bf16) {
          std::vector<bf16> b(v.size());
          for (std::size_t i = 0; i < v.size(); ++i) b[i] = bf16(v[i]);
          DSV4_TRY(w.add<bf16>(e.name, e.shape, b));
        } else {
          DSV4_TRY(w.add<float>(e.name, e.shape, v));
        }
        break;
      }
      case io::tensor_kind::ids: {
        std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
        const std::int64_t k = e.shape[1];
        for (std::int64_t r = 0; r < e.shape[0]; ++r)
          for (std::int64_t j = 0; j < k; ++j)
            ids[static_cast<std::size_t>(r * k + j)] = (r + j) % s.n_routed_experts;
        DSV4_TRY(w.add<std::int64_t>(e.name, e.shape, ids));
        break;
      }
    }
  }
  return {};
}

}  // namespace dsv4::test
