// Writing safetensors checkpoints in the official layout (spec §11.1), for tests, training exports
// and conversions. Everything checkpoint.hpp reads back.
//
//   safetensors_writer w;
//   w.add<float>("layers.0.attn.attn_sink", {n_heads}, sink);                  // as given
//   w.add_linear("layers.0.attn.wq_a", weight_format::fp8_e4m3_block128, wq_a); // .weight + .scale
//   w.add_linear("layers.0.ffn.experts.3.w1", weight_format::fp4_e2m1_block32, w1);
//   DSV4_TRY(w.write("model.safetensors"));               // one file
//   DSV4_TRY(w.write_sharded(dir, 4 << 30));              // model-0000k-of-0000n.safetensors + index
//
// File layout written: the 8-byte little-endian header length, the JSON header (keys sorted,
// `__metadata__` first when set, padded with spaces to a multiple of 8 bytes so that the data
// section starts 8-aligned), then the tensors' bytes with no gaps, widest dtype first and by name
// within a dtype width, so that every tensor is aligned for zero-copy views. Tensors are
// copied into the writer when added; add() checks the name is new and the byte count matches
// dtype and shape (overflow-checked). Files are written to `<path>.tmp` and renamed, so a failed
// write leaves no partial file under the final name.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/arith.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_quant.hpp"
#include "dsv4/io/safetensors.hpp"

namespace dsv4::io {

class safetensors_writer {
 public:
  // Adds a tensor from raw bytes (elements(shape) * dtype_size(type) of them).
  status add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> data) {
    if (name.empty() || name == "__metadata__")
      return {errc::invalid_argument, "safetensors_writer: \"" + name + "\" cannot name a tensor"};
    if (shape.size() > max_rank)
      return {errc::invalid_argument,
              "safetensors_writer: " + name + ": rank above " + std::to_string(max_rank)};
    std::int64_t bytes = dtype_size(type);
    for (std::int64_t e : shape)
      if (e < 0 || !checked_mul(bytes, e, bytes))
        return {errc::invalid_argument, "safetensors_writer: " + name + ": bad shape " + shape_string(shape)};
    if (static_cast<std::uint64_t>(bytes) != data.size())
      return {errc::invalid_argument, "safetensors_writer: " + name + ": " + std::string(to_string(type)) +
                                          " " + shape_string(shape) + " needs " + std::to_string(bytes) +
                                          " bytes, got " + std::to_string(data.size())};
    if (tensors_.count(name) != 0)
      return {errc::invalid_argument, "safetensors_writer: " + name + " added twice"};
    tensors_.emplace(std::move(name), entry{type, std::move(shape), {data.begin(), data.end()}});
    return {};
  }

  // Adds a tensor of a C++ element type that aliases a safetensors dtype (float, bf16, fp8_e4m3,
  // ue8m0, fp4x2, int8/32/64).
  template <class T>
  status add(std::string name, std::vector<std::int64_t> shape, std::span<const T> data) {
    static_assert(dtype_of<T>.has_value(), "safetensors_writer::add: T has no safetensors dtype");
    return add(std::move(name), *dtype_of<T>, std::move(shape), std::as_bytes(data));
  }

  // Adds `prefix.weight` (and `prefix.scale`) for a float matrix w (out, in) in format f: f32 and
  // bf16 store it as is (bf16 rounded to nearest even); fp8 and fp4 quantize (weight_quant.hpp).
  status add_linear(const std::string& prefix, config::weight_format f, tensor_view<const float, 2> w) {
    const index_t rows = w.extent(0), cols = w.extent(1);
    const std::vector<std::int64_t> shape{rows, cols};
    switch (f) {
      case config::weight_format::f32: {
        std::vector<float> v(static_cast<std::size_t>(rows * cols));
        for (index_t r = 0; r < rows; ++r)
          for (index_t c = 0; c < cols; ++c) v[static_cast<std::size_t>(r * cols + c)] = w(r, c);
        return add<float>(prefix + ".weight", shape, v);
      }
      case config::weight_format::bf16: {
        std::vector<bf16> v(static_cast<std::size_t>(rows * cols));
        for (index_t r = 0; r < rows; ++r)
          for (index_t c = 0; c < cols; ++c) v[static_cast<std::size_t>(r * cols + c)] = bf16(w(r, c));
        return add<bf16>(prefix + ".weight", shape, v);
      }
      case config::weight_format::fp8_e4m3_block128: {
        const index_t sr = ceil_div(rows, fp8_block), sc = ceil_div(cols, fp8_block);
        std::vector<fp8_e4m3> q(static_cast<std::size_t>(rows * cols));
        std::vector<ue8m0> s(static_cast<std::size_t>(sr * sc));
        DSV4_TRY(quantize_fp8_block128(w, tensor_view<fp8_e4m3, 2>(q.data(), {rows, cols}),
                                       tensor_view<ue8m0, 2>(s.data(), {sr, sc}), prefix + ".weight"));
        DSV4_TRY(add<fp8_e4m3>(prefix + ".weight", shape, q));
        return add<ue8m0>(prefix + ".scale", {sr, sc}, s);
      }
      case config::weight_format::fp4_e2m1_block32: {
        if (cols % fp4_block != 0)
          return {errc::shape_mismatch,
                  prefix + ".weight: FP4 needs in % 32 == 0, got " + std::to_string(cols)};
        std::vector<fp4x2> q(static_cast<std::size_t>(rows * cols / 2));
        std::vector<ue8m0> s(static_cast<std::size_t>(rows * cols / fp4_block));
        DSV4_TRY(quantize_fp4_block32(w, tensor_view<fp4x2, 2>(q.data(), {rows, cols / 2}),
                                      tensor_view<ue8m0, 2>(s.data(), {rows, cols / fp4_block}),
                                      prefix + ".weight"));
        DSV4_TRY(add<fp4x2>(prefix + ".weight", {rows, cols / 2}, q));
        return add<ue8m0>(prefix + ".scale", {rows, cols / fp4_block}, s);
      }
    }
    return {errc::invalid_argument, prefix + ": unknown weight format"};
  }

  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }
  [[nodiscard]] std::size_t size() const { return tensors_.size(); }

  // The whole file in memory.
  [[nodiscard]] std::vector<std::byte> serialize() const { return serialize_range(all_names()); }

  // Writes one file.
  [[nodiscard]] status write(const std::filesystem::path& path) const {
    return write_bytes(path, serialize());
  }

  // Writes shards of at most max_shard_bytes of tensor data each (a larger tensor gets a shard of
  // its own), named model-0000k-of-0000n.safetensors, and model.safetensors.index.json, in `dir`.
  [[nodiscard]] status write_sharded(const std::filesystem::path& dir, std::int64_t max_shard_bytes) const {
    std::vector<std::vector<std::string>> groups(1);
    std::int64_t used = 0;
    for (const auto& [name, e] : tensors_) {
      const auto n = static_cast<std::int64_t>(e.bytes.size());
      if (!groups.back().empty() && used + n > max_shard_bytes) {
        groups.emplace_back();
        used = 0;
      }
      groups.back().push_back(name);
      used += n;
    }
    nlohmann::json index;
    std::int64_t total = 0;
    for (const auto& [name, e] : tensors_) total += static_cast<std::int64_t>(e.bytes.size());
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = nlohmann::json::object();
    for (std::size_t k = 0; k < groups.size(); ++k) {
      const std::string file = shard_name(k + 1, groups.size());
      for (const auto& name : groups[k]) index["weight_map"][name] = file;
      DSV4_TRY(write_bytes(dir / file, serialize_range(groups[k])));
    }
    const std::string text = index.dump(2);
    std::vector<std::byte> bytes(text.size());
    std::memcpy(bytes.data(), text.data(), text.size());
    return write_bytes(dir / "model.safetensors.index.json", bytes);
  }

  static std::string shard_name(std::size_t k, std::size_t n) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k, n);
    return buf;
  }

 private:
  struct entry {
    dtype type;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };

  [[nodiscard]] std::vector<std::string> all_names() const {
    std::vector<std::string> v;
    for (const auto& [name, e] : tensors_) v.push_back(name);
    return v;
  }

  [[nodiscard]] std::vector<std::byte> serialize_range(std::vector<std::string> names) const {
    // Widest elements first, so that every tensor starts aligned for its dtype (the data section
    // starts 8-aligned and has no gaps).
    std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
      return dtype_size(tensors_.at(a).type) > dtype_size(tensors_.at(b).type);
    });
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata_.empty()) h["__metadata__"] = metadata_;
    std::int64_t offset = 0;
    for (const auto& name : names) {
      const entry& e = tensors_.at(name);
      const auto n = static_cast<std::int64_t>(e.bytes.size());
      h[name] = {{"dtype", std::string(to_string(e.type))},
                 {"shape", e.shape},
                 {"data_offsets", {offset, offset + n}}};
      offset += n;
    }
    std::string text = h.dump();
    while ((8 + text.size()) % 8 != 0) text.push_back(' ');
    std::vector<std::byte> out(8 + text.size() + static_cast<std::size_t>(offset));
    std::uint64_t len = text.size();
    for (int i = 0; i < 8; ++i)
      out[static_cast<std::size_t>(i)] = static_cast<std::byte>((len >> (8 * i)) & 0xffu);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::size_t at = 8 + text.size();
    for (const auto& name : names) {
      const entry& e = tensors_.at(name);
      if (!e.bytes.empty()) std::memcpy(out.data() + at, e.bytes.data(), e.bytes.size());
      at += e.bytes.size();
    }
    return out;
  }

  static status write_bytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) return {errc::io_error, tmp.string() + ": cannot create"};
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      out.flush();
      if (!out) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        return {errc::io_error, tmp.string() + ": write failed"};
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
      std::filesystem::remove(tmp, ec);
      return {errc::io_error, path.string() + ": cannot rename from " + tmp.string()};
    }
    return {};
  }

  std::map<std::string, entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dsv4::io
