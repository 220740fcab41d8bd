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
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
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

namespace detail {

// Checks a tensor's name and shape for writing and gives its byte count. `who` starts messages.
inline status check_tensor_decl(const std::string& name, dtype type, const std::vector<std::int64_t>& shape,
                                std::int64_t& bytes, std::string_view who) {
  if (name.empty() || name == "__metadata__")
    return {errc::invalid_argument, std::string(who) + ": \"" + name + "\" cannot name a tensor"};
  if (shape.size() > max_rank)
    return {errc::invalid_argument,
            std::string(who) + ": " + name + ": rank above " + std::to_string(max_rank)};
  bytes = dtype_size(type);
  for (std::int64_t e : shape)
    if (e < 0 || !checked_mul(bytes, e, bytes))
      return {errc::invalid_argument, std::string(who) + ": " + name + ": bad shape " + shape_string(shape)};
  return {};
}

// Where each tensor of a file goes: file order (widest elements first, so that every tensor starts
// aligned for its dtype, and by name within a width: `names` come sorted and the sort is stable),
// offsets in the data section, and the header text padded with spaces so that the data section
// starts 8-aligned. `decl(name)` gives {dtype, shape, bytes} of a name.
struct file_layout {
  std::vector<std::string> order;
  std::vector<std::int64_t> offsets;  // in `order`
  std::string header;                 // the JSON, padded; the file starts with its 8-byte length
  std::int64_t data_bytes = 0;
};

template <class Decl>
file_layout plan_file(std::vector<std::string> names, Decl decl,
                      const std::map<std::string, std::string>& metadata) {
  std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return dtype_size(decl(a).type) > dtype_size(decl(b).type);
  });
  file_layout out;
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::int64_t offset = 0;
  for (const auto& name : names) {
    const auto& e = decl(name);
    h[name] = {{"dtype", std::string(to_string(e.type))},
               {"shape", e.shape},
               {"data_offsets", {offset, offset + e.bytes}}};
    out.offsets.push_back(offset);
    offset += e.bytes;
  }
  out.header = h.dump();
  while ((8 + out.header.size()) % 8 != 0) out.header.push_back(' ');
  out.order = std::move(names);
  out.data_bytes = offset;
  return out;
}

// The 8-byte little-endian length of a header.
inline std::array<std::byte, 8> header_length(const std::string& header) {
  std::array<std::byte, 8> out{};
  const std::uint64_t len = header.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<std::byte>((len >> (8 * i)) & 0xffu);
  return out;
}

}  // namespace detail

class safetensors_writer {
 public:
  // Adds a tensor from raw bytes (elements(shape) * dtype_size(type) of them).
  status add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> data) {
    std::int64_t bytes = 0;
    DSV4_TRY(detail::check_tensor_decl(name, type, shape, bytes, "safetensors_writer"));
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
    struct decl_ref {
      dtype type;
      const std::vector<std::int64_t>& shape;
      std::int64_t bytes;
    };
    const auto layout = detail::plan_file(
        std::move(names),
        [&](const std::string& n) {
          const entry& e = tensors_.at(n);
          return decl_ref{e.type, e.shape, static_cast<std::int64_t>(e.bytes.size())};
        },
        metadata_);
    const std::string& text = layout.header;
    std::vector<std::byte> out(8 + text.size() + static_cast<std::size_t>(layout.data_bytes));
    const auto len = detail::header_length(text);
    std::memcpy(out.data(), len.data(), 8);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::size_t at = 8 + text.size();
    for (const auto& name : layout.order) {
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

// One safetensors file written tensor by tensor, holding no tensor data itself: declare every
// tensor (name, dtype, shape) and the metadata, open(path), which fixes the layout and writes the
// header to `<path>.tmp`, then write() each tensor's bytes once, in any order (order() is the file
// order, which writes sequentially), and finish(), which renames the file into place. The file is
// byte for byte what safetensors_writer writes for the same tensors and metadata.
//
//   safetensors_stream_writer w;
//   for (...) DSV4_TRY(w.declare(name, dtype::f8_e4m3, {rows, cols}));
//   DSV4_TRY(w.open(dir / "model-00001-of-00004.safetensors"));
//   for (...) DSV4_TRY(w.write(name, bytes_of_this_tensor));   // produced one at a time
//   DSV4_TRY(w.finish());
//
// Every error is a status naming the tensor (a name not declared, or written twice, a byte count
// that does not match dtype and shape, a declared tensor never written at finish(), a failed
// write) and is final: the temporary file is removed, later calls return the same status, and no
// file appears under the final name. Destroying an unfinished writer removes its temporary file.
class safetensors_stream_writer {
 public:
  safetensors_stream_writer() = default;
  safetensors_stream_writer(const safetensors_stream_writer&) = delete;
  safetensors_stream_writer& operator=(const safetensors_stream_writer&) = delete;
  ~safetensors_stream_writer() { discard(); }

  // Declares a tensor (before open()).
  status declare(std::string name, dtype type, std::vector<std::int64_t> shape) {
    DSV4_TRY(failed_);
    if (opened_) return fail({errc::invalid_argument, who() + ": " + name + " declared after open()"});
    std::int64_t bytes = 0;
    if (auto s = detail::check_tensor_decl(name, type, shape, bytes, who()); !s.ok()) return fail(s);
    if (decls_.count(name) != 0)
      return fail({errc::invalid_argument, who() + ": " + name + " declared twice"});
    decls_.emplace(std::move(name), decl{type, std::move(shape), bytes});
    return {};
  }
  template <class T>
  status declare(std::string name, std::vector<std::int64_t> shape) {
    static_assert(dtype_of<T>.has_value(), "safetensors_stream_writer::declare: T has no safetensors dtype");
    return declare(std::move(name), *dtype_of<T>, std::move(shape));
  }
  // Metadata (before open()).
  void set_metadata(std::string key, std::string value) {
    if (!opened_) metadata_[std::move(key)] = std::move(value);
  }

  // Fixes the layout and writes the header to `<path>.tmp`.
  status open(const std::filesystem::path& path) {
    DSV4_TRY(failed_);
    if (opened_) return fail({errc::invalid_argument, who() + ": open() called twice"});
    path_ = path;
    tmp_ = path.string() + ".tmp";
    std::vector<std::string> names;
    for (const auto& [n, d] : decls_) names.push_back(n);
    layout_ = detail::plan_file(
        std::move(names), [&](const std::string& n) -> const decl& { return decls_.at(n); }, metadata_);
    for (std::size_t k = 0; k < layout_.order.size(); ++k)
      decls_.at(layout_.order[k]).offset = layout_.offsets[k];
    out_.open(tmp_, std::ios::binary | std::ios::out | std::ios::trunc);
    opened_ = true;
    if (!out_) return fail({errc::io_error, tmp_.string() + ": cannot create"});
    const auto len = detail::header_length(layout_.header);
    out_.write(reinterpret_cast<const char*>(len.data()), 8);
    out_.write(layout_.header.data(), static_cast<std::streamsize>(layout_.header.size()));
    if (!out_) return fail({errc::io_error, tmp_.string() + ": write failed"});
    return {};
  }

  // The tensors in file order (valid after open()).
  [[nodiscard]] const std::vector<std::string>& order() const { return layout_.order; }

  // Writes one declared tensor's bytes (after open(); each tensor once).
  status write(std::string_view name, std::span<const std::byte> data) {
    DSV4_TRY(failed_);
    if (!opened_)
      return fail({errc::invalid_argument, who() + ": write(" + std::string(name) + ") before open()"});
    const auto it = decls_.find(name);
    if (it == decls_.end())
      return fail({errc::invalid_argument,
                   who() + ": " + tmp_.string() + ": " + std::string(name) + " was not declared"});
    decl& d = it->second;
    if (d.written)
      return fail({errc::invalid_argument,
                   who() + ": " + tmp_.string() + ": " + std::string(name) + " written twice"});
    if (static_cast<std::uint64_t>(d.bytes) != data.size())
      return fail({errc::invalid_argument, who() + ": " + tmp_.string() + ": " + std::string(name) + ": " +
                                               std::string(to_string(d.type)) + " " + shape_string(d.shape) +
                                               " needs " + std::to_string(d.bytes) + " bytes, got " +
                                               std::to_string(data.size())});
    out_.seekp(static_cast<std::streamoff>(8 + layout_.header.size()) +
               static_cast<std::streamoff>(d.offset));
    if (!data.empty())
      out_.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    if (!out_) return fail({errc::io_error, tmp_.string() + ": writing " + std::string(name) + " failed"});
    d.written = true;
    ++written_;
    return {};
  }
  template <class T>
  status write(std::string_view name, std::span<const T> data) {
    static_assert(dtype_of<T>.has_value(), "safetensors_stream_writer::write: T has no safetensors dtype");
    const auto it = decls_.find(name);
    if (!failed_.ok() || it == decls_.end() || it->second.type != *dtype_of<T>) {
      if (failed_.ok() && it != decls_.end())
        return fail({errc::invalid_argument, who() + ": " + std::string(name) + " was declared " +
                                                 std::string(to_string(it->second.type)) + ", written as " +
                                                 std::string(to_string(*dtype_of<T>))});
    }
    return write(name, std::as_bytes(data));
  }

  // Checks that every declared tensor was written, closes the file and renames it into place.
  status finish() {
    DSV4_TRY(failed_);
    if (!opened_) return fail({errc::invalid_argument, who() + ": finish() before open()"});
    if (written_ != decls_.size()) {
      for (const auto& name : layout_.order)
        if (!decls_.at(name).written)
          return fail({errc::invalid_argument, who() + ": " + tmp_.string() + ": " + name +
                                                   " was declared but not written (" +
                                                   std::to_string(decls_.size() - written_) + " missing)"});
    }
    out_.flush();
    out_.close();
    if (!out_) return fail({errc::io_error, tmp_.string() + ": write failed"});
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) return fail({errc::io_error, path_.string() + ": cannot rename from " + tmp_.string()});
    finished_ = true;
    return {};
  }

  // Gives up: removes the temporary file (a finished file stays).
  void discard() {
    if (out_.is_open()) out_.close();
    if (opened_ && !finished_) {
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }

 private:
  struct decl {
    dtype type;
    std::vector<std::int64_t> shape;
    std::int64_t bytes = 0;
    std::int64_t offset = 0;
    bool written = false;
  };

  static std::string who() { return "safetensors_stream_writer"; }

  status fail(status s) {
    failed_ = s;
    discard();
    return s;
  }

  std::map<std::string, decl, std::less<>> decls_;
  std::map<std::string, std::string> metadata_;
  detail::file_layout layout_;
  std::filesystem::path path_, tmp_;
  std::ofstream out_;
  std::size_t written_ = 0;
  bool opened_ = false, finished_ = false;
  status failed_;
};

}  // namespace dsv4::io
