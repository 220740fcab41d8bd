// A DeepSeek-V4 checkpoint: one or more safetensors shards, looked up by canonical name whatever
// naming scheme the files use (naming.hpp), checked against a model shape (inventory.hpp).
//
// checkpoint::open(path) accepts
//   - a directory with `model.safetensors.index.json` ({"weight_map": {tensor: shard file}}): every
//     shard it names is mapped; a shard name must be a plain file name in that directory (no
//     separators, no "..", so an index cannot reach other files), each listed tensor must be in
//     its shard, and each tensor of a shard must be listed for that shard;
//   - a directory with `model.safetensors`;
//   - a single .safetensors file.
// The scheme is detected from all names together (detect_scheme); a canonical name stored twice,
// a name the scheme does not define, or a misshaped fused experts tensor is reported by
// validate(), or by open() where it makes lookups ambiguous.
//
// find(canonical) returns a tensor_ref: the canonical tensor's dtype, shape and bytes inside the
// mapping (zero-copy, also for one expert's rows of a fused hf_modules tensor, which are
// contiguous). Messages name tensors as the file spells them, with the canonical name beside
// when it differs:
//   "model/model.safetensors: model.layers.0.attn.norm.weight (canonical layers.0.attn.kv_norm.weight):
//    shape (32), expected (64)"
// validate(shape) checks the whole inventory: every expected tensor present with an accepted dtype
// and its shape, no extra tensor, and every tid2eid entry in [0, n_routed_experts) with distinct
// experts per row. It first checks what the headers say (check_inventory: names, dtypes, shapes;
// no tensor data read), then the values that need reading (check_values: F32 block scales,
// tid2eid rows) tensor by tensor in inventory order, reporting each tensor to an optional
// load_progress hook that may stop it. loaded_model::bind (load_model.hpp) makes the same checks
// itself, the values of each tensor as it binds it, so a load validates once: give bind the
// checkpoint unvalidated, and its hook. Mapped shards live as long as the checkpoint (move-only).
// Block scales may be spelled `X.scale` (official) or `X.weight_scale_inv` (transformers'
// fine-grained FP8; fused `mlp.experts.{gate_up,down}_proj_scale_inv` in module names), both the
// canonical `X.scale` (naming.hpp), and stored F8_E8M0 or F32: an F32 scale is accepted when every
// value is an exact power of two (it is then converted to E8M0), and refused naming the tensor,
// element and value otherwise (validate, read_as_float, scales(), load_model).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsv4/core/dtype.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/io/inventory.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/io/naming.hpp"
#include "dsv4/io/safetensors.hpp"

namespace dsv4::io {

inline constexpr std::int64_t max_fused_experts = 1 << 16;
inline constexpr std::uintmax_t max_index_bytes = std::uintmax_t{256} << 20;

// One canonical tensor inside a checkpoint's mapping.
struct tensor_ref {
  const safetensors_file* file = nullptr;
  const tensor_info* stored = nullptr;  // the stored tensor (a fused one for hf_modules experts)
  std::string canonical;
  std::string label;  // the stored name as the file spells it, with the part of a fused tensor
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;   // of the canonical tensor
  std::span<const std::byte> bytes;  // of the canonical tensor

  // "model.layers.0.attn.norm.weight (canonical layers.0.attn.kv_norm.weight) in dir/model.safetensors"
  [[nodiscard]] std::string where() const {
    std::string s = label;
    if (label != canonical) s += " (canonical " + canonical + ")";
    return s + " in " + (file != nullptr ? file->name() : std::string("?"));
  }
  // A zero-copy view (see typed_view).
  template <class T, std::size_t Rank>
  [[nodiscard]] result<tensor_view<const T, Rank>> view() const {
    return typed_view<T, Rank>(bytes, type, shape, where());
  }
};

// A canonical tensor decoded to float: F32, BF16, FP8 with its `.scale`, FP4 with its `.scale`.
struct float_tensor {
  std::vector<std::int64_t> shape;  // logical (an FP4 weight has twice the stored columns)
  std::vector<float> data;          // row-major
};

// A block scale stored as F32 (transformers' fine-grained FP8 with scale_fmt "float") as E8M0:
// exact only for a power of two in [2^-127, 2^127].
inline bool f32_scale_to_ue8m0(float v, ue8m0& out) {
  if (!(v > 0.0f) || !std::isfinite(v)) return false;
  out = ue8m0::ceil_pow2(v);
  return !out.is_nan() && out.to_float() == v;
}

// The block scales of `r` as E8M0 into `out` (r's element count): F8_E8M0 as stored; F32 when every
// value is an exact power of two, otherwise a status naming the tensor, the element and its value
// (a scale that is not a power of two has no E8M0 form and the matrices take E8M0 scales only).
inline status scales_to_ue8m0(const tensor_ref& r, std::span<ue8m0> out) {
  const std::size_t n = out.size();
  if (r.type == dtype::f8_e8m0 && r.bytes.size() == n) {
    if (n > 0) std::memcpy(out.data(), r.bytes.data(), n);
    return {};
  }
  if (r.type != dtype::f32 || r.bytes.size() != n * sizeof(float))
    return {errc::invalid_argument, r.where() + ": dtype " + std::string(to_string(r.type)) +
                                        ", expected F8_E8M0 (or F32 powers of two) block scales"};
  for (std::size_t i = 0; i < n; ++i) {
    float v = 0.0f;
    std::memcpy(&v, r.bytes.data() + i * sizeof(float), sizeof(float));
    if (!f32_scale_to_ue8m0(v, out[i])) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
      return {errc::invalid_argument, r.where() + ": F32 block scale element " + std::to_string(i) + " is " +
                                          buf +
                                          ", not a power of two in [2^-127, 2^127]; only E8M0 "
                                          "(power-of-two) scales are supported"};
    }
  }
  return {};
}

class load_progress;

namespace detail {
// A callable object (not a load_progress) that answers f(done, total, name) with a bool.
template <class F>
concept progress_callable =
    std::is_object_v<std::remove_reference_t<F>> && !std::same_as<std::remove_cvref_t<F>, load_progress> &&
    std::is_invocable_r_v<bool, std::remove_reference_t<F>&, std::int64_t, std::int64_t, std::string_view>;
}  // namespace detail

// A load's progress hook, for checkpoint::validate, loaded_model::bind and load_model. It is called
// once per tensor of the inventory, after that tensor is checked (and, by bind, bound), with
// `done` the tensors finished so far (1, 2, ... strictly increasing, the last call has done ==
// total), `total` the number of tensors the inventory expects (the checkpoint's canonical tensor
// count, the same in every call of one load) and the tensor's canonical name (valid during the
// call). Returning false stops the load: the call returns the status of load_cancelled() (errc
// invalid_state, "... cancelled by the progress hook after D of T tensors"), and bind returns no
// model. An exception the callable throws passes through the call.
// It refers to a callable it does not own (no allocation, no copy), so the callable must outlive
// the call it is given to; a lambda written in the call's arguments does. A default-constructed
// hook does nothing. A plain function with a context pointer works as well:
//   bool report(void* ctx, std::int64_t done, std::int64_t total, std::string_view name);
//   ckpt.validate(shape, io::mtp_policy::automatic, io::load_progress(&report, &state));
class load_progress {
 public:
  using function = bool(void* context, std::int64_t done, std::int64_t total, std::string_view name);

  constexpr load_progress() noexcept = default;
  constexpr load_progress(function* f, void* context) noexcept : context_(context), call_(f) {}
  // Any callable object (a lambda, a function object), by reference.
  template <detail::progress_callable F>
  load_progress(F&& f) noexcept  // NOLINT(google-explicit-constructor): given where a hook is expected
      : context_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_(&invoke<std::remove_reference_t<F>>) {}

  // Whether the load goes on (always, without a hook).
  bool operator()(std::int64_t done, std::int64_t total, std::string_view name) const {
    return call_ == nullptr || call_(context_, done, total, name);
  }
  explicit operator bool() const noexcept { return call_ != nullptr; }

 private:
  template <class F>
  static bool invoke(void* f, std::int64_t done, std::int64_t total, std::string_view name) {
    return static_cast<bool>((*static_cast<F*>(f))(done, total, name));
  }

  void* context_ = nullptr;
  function* call_ = nullptr;
};

// The status of a load its progress hook stopped after `done` of `total` tensors; `what` names the
// checkpoint.
inline status load_cancelled(std::string_view what, std::int64_t done, std::int64_t total) {
  return {errc::invalid_state, std::string(what) + ": load cancelled by the progress hook after " +
                                   std::to_string(done) + " of " + std::to_string(total) + " tensors"};
}

// Whether the MTP block's tensors are expected by validate().
enum class mtp_policy : std::uint8_t {
  automatic,  // expected when the file has any mtp.* tensor, or is official and n_mtp_layers > 0
  required,
  absent,
};

class checkpoint {
 public:
  checkpoint(const checkpoint&) = delete;
  checkpoint& operator=(const checkpoint&) = delete;
  checkpoint(checkpoint&&) noexcept = default;
  checkpoint& operator=(checkpoint&&) noexcept = default;
  ~checkpoint() = default;

  static result<checkpoint> open(const std::filesystem::path& path) {
    std::error_code ec;
    const bool dir = std::filesystem::is_directory(path, ec);
    if (!dir) {
      auto f = safetensors_file::open(path);
      if (!f) return f.error();
      std::vector<safetensors_file> shards;
      shards.push_back(std::move(*f));
      return from_files(std::move(shards), path.string());
    }
    const auto index = path / "model.safetensors.index.json";
    if (std::filesystem::exists(index, ec)) return open_indexed(path, index);
    const auto single = path / "model.safetensors";
    if (std::filesystem::exists(single, ec)) return open(single);
    return status{errc::io_error,
                  path.string() + ": holds neither model.safetensors.index.json nor model.safetensors"};
  }

  // A checkpoint over shards already opened (or made from bytes). `label` names it in messages.
  static result<checkpoint> from_files(std::vector<safetensors_file> shards, std::string label) {
    checkpoint c;
    c.label_ = std::move(label);
    c.shards_ = std::move(shards);
    std::vector<std::string_view> names;
    for (const auto& f : c.shards_)
      for (const auto& t : f.tensors()) names.push_back(t.name);
    auto scheme = detect_scheme(names, c.label_);
    if (!scheme) return scheme.error();
    c.scheme_ = *scheme;
    DSV4_TRY(c.build_map());
    return c;
  }

  [[nodiscard]] naming_scheme scheme() const { return scheme_; }
  [[nodiscard]] const std::string& label() const { return label_; }
  [[nodiscard]] std::span<const safetensors_file> shards() const { return shards_; }
  // Every canonical name, sorted.
  [[nodiscard]] std::vector<std::string> canonical_names() const {
    std::vector<std::string> v;
    v.reserve(map_.size());
    for (const auto& [k, loc] : map_) v.push_back(k);
    return v;
  }
  // Stored names the scheme does not define (validate() reports them as extra tensors).
  [[nodiscard]] const std::vector<std::string>& unrecognized() const { return unrecognized_; }
  [[nodiscard]] bool contains(std::string_view canonical) const { return map_.find(canonical) != map_.end(); }

  // The name canonical tensor `canonical` has in this checkpoint's scheme (for messages).
  [[nodiscard]] std::string stored_label(std::string_view canonical) const {
    auto s = to_scheme(canonical, scheme_);
    std::string label = s ? s->name : std::string(canonical);
    if (scale_inv_ && s && label.ends_with(".scale"))  // the file's convention
      label = label.substr(0, label.size() - 6) + ".weight_scale_inv";
    if (s && s->part != fused_part::whole) label += part_suffix(s->part, s->expert);
    if (label != canonical) label += " (canonical " + std::string(canonical) + ")";
    return label;
  }

  [[nodiscard]] result<tensor_ref> find(std::string_view canonical) const {
    const auto it = map_.find(canonical);
    if (it == map_.end())
      return status{errc::invalid_argument, label_ + ": missing tensor " + stored_label(canonical)};
    const location& loc = it->second;
    const safetensors_file& f = shards_[loc.shard];
    const tensor_info& t = f.tensors()[loc.tensor];
    tensor_ref r;
    r.file = &f;
    r.stored = &t;
    r.canonical = it->first;
    r.label = t.name;
    r.type = t.type;
    const auto all = f.bytes(t);
    if (loc.part == fused_part::whole) {
      r.shape = t.shape;
      r.bytes = all;
      return r;
    }
    // Fused (E, R, C): expert e's slab is R*C elements; gate/up take half of its rows.
    const std::int64_t rows = t.shape[1], cols = t.shape[2], esz = dtype_size(t.type);
    const std::int64_t slab = rows * cols * esz;
    std::int64_t offset = loc.expert * slab, len = slab;
    r.shape = {rows, cols};
    if (loc.part != fused_part::expert) {
      r.shape = {rows / 2, cols};
      len = slab / 2;
      if (loc.part == fused_part::up_rows) offset += len;
    }
    r.bytes = all.subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(len));
    r.label += part_suffix(loc.part, loc.expert, rows);
    return r;
  }

  // Checks dtype and shape of one canonical tensor.
  [[nodiscard]] status expect(std::string_view canonical, tensor_kind kind,
                              std::span<const std::int64_t> shape) const {
    auto r = find(canonical);
    if (!r) return r.error();
    if (!accepts(kind, r->type))
      return {errc::invalid_argument, r->where() + ": dtype " + std::string(to_string(r->type)) +
                                          ", expected " + std::string(accepted_dtypes(kind))};
    if (!std::equal(r->shape.begin(), r->shape.end(), shape.begin(), shape.end()))
      return {errc::shape_mismatch,
              r->where() + ": shape " + shape_string(r->shape) + ", expected " + shape_string(shape)};
    return {};
  }

  // The whole inventory of `s` (see the banner): check_inventory, then check_values on each
  // expected tensor in inventory order, each reported to `progress` once checked. The first problem
  // found is returned, or load_cancelled() when the hook stops it.
  [[nodiscard]] status validate(const model_shape& s, mtp_policy mtp = mtp_policy::automatic,
                                load_progress progress = {}) const {
    auto expected = inventory(s, mtp);
    if (!expected) return expected.error();
    DSV4_TRY(check_inventory(*expected));
    const auto total = static_cast<std::int64_t>(expected->size());
    for (std::int64_t i = 0; i < total; ++i) {
      const expected_tensor& e = (*expected)[static_cast<std::size_t>(i)];
      DSV4_TRY(check_values(e, s.n_routed_experts));
      if (!progress(i + 1, total, e.name)) return load_cancelled(label_, i + 1, total);
    }
    return {};
  }

  // The tensors validate() expects of this checkpoint for shape `s` (which must pass check_rules):
  // expected_tensors(s, with_mtp), the MTP block included when `mtp` requires it, or, automatic,
  // when the file holds any mtp.* tensor or is official with n_mtp_layers > 0.
  [[nodiscard]] result<std::vector<expected_tensor>> inventory(const model_shape& s,
                                                               mtp_policy mtp = mtp_policy::automatic) const {
    DSV4_TRY(check_rules(s, label_ + ": the model shape"));
    bool with_mtp = mtp == mtp_policy::required;
    if (mtp == mtp_policy::automatic) {
      const auto first_mtp = map_.lower_bound(std::string_view("mtp."));
      const bool has_mtp = first_mtp != map_.end() && first_mtp->first.starts_with("mtp.");
      with_mtp = has_mtp || (scheme_ == naming_scheme::official && s.n_mtp_layers > 0);
    }
    return expected_tensors(s, with_mtp);
  }

  // What the headers say, no tensor data read: every tensor of `expected` (distinct canonical
  // names) stored with an accepted dtype and its shape (expect), in `expected`'s order, and nothing
  // else stored, neither another canonical name nor a name the scheme does not define.
  [[nodiscard]] status check_inventory(std::span<const expected_tensor> expected) const {
    for (const auto& e : expected) DSV4_TRY(expect(e.name, e.kind, e.shape));
    if (map_.size() > expected.size()) {  // all expected are stored: some stored name is not expected
      std::set<std::string_view> names;
      for (const auto& e : expected) names.insert(e.name);
      for (const auto& [name, loc] : map_)
        if (names.find(name) == names.end())
          return {errc::invalid_argument, label_ + ": extra tensor " + stored_label(name) + " in " +
                                              shards_[loc.shard].name() + ", not part of the model"};
    }
    if (!unrecognized_.empty())
      return {errc::invalid_argument, label_ + ": extra tensor " + unrecognized_.front() + ", not a " +
                                          std::string(to_string(scheme_)) + " name of a DeepSeek-V4 tensor"};
    return {};
  }

  // The values of one tensor that check_inventory passed, where they need checking: a block
  // scale's (check_scales), a tid2eid table's rows (check_tid2eid, experts in [0, n_routed_experts)).
  [[nodiscard]] status check_values(const expected_tensor& e, int n_routed_experts) const {
    if (e.kind == tensor_kind::scale) return check_scales(e.name);
    if (e.kind == tensor_kind::ids) return check_tid2eid(e.name, n_routed_experts);
    return {};
  }

  // Block scales F8_E8M0, or F32 holding only powers of two (scales_to_ue8m0).
  [[nodiscard]] status check_scales(std::string_view canonical) const {
    auto r = find(canonical);
    if (!r) return r.error();
    if (r->type == dtype::f8_e8m0) return {};
    std::vector<ue8m0> tmp(r->bytes.size() / sizeof(float));
    return scales_to_ue8m0(*r, tmp);
  }

  // The block scales of `canonical` (an X.scale or X.weight_scale_inv) as E8M0 values.
  [[nodiscard]] result<std::vector<ue8m0>> scales(std::string_view canonical) const {
    auto r = find(canonical);
    if (!r) return r.error();
    std::vector<ue8m0> out(r->type == dtype::f32 ? r->bytes.size() / sizeof(float) : r->bytes.size());
    DSV4_TRY(scales_to_ue8m0(*r, out));
    return out;
  }

  // Every row of a tid2eid table (vocab, k) names k distinct experts in [0, n_experts).
  [[nodiscard]] status check_tid2eid(std::string_view canonical, int n_experts) const {
    auto r = find(canonical);
    if (!r) return r.error();
    if (r->shape.size() != 2 || !accepts(tensor_kind::ids, r->type))
      return {errc::invalid_argument, r->where() + ": expected a (vocab, k) I64 or I32 table"};
    const std::int64_t rows = r->shape[0], k = r->shape[1], esz = dtype_size(r->type);
    for (std::int64_t row = 0; row < rows; ++row) {
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t v = read_id(r->bytes, (row * k + j) * esz, r->type);
        if (v < 0 || v >= n_experts)
          return {errc::out_of_range, r->where() + ": row " + std::to_string(row) + " names expert " +
                                          std::to_string(v) + ", outside [0, " + std::to_string(n_experts) +
                                          ")"};
        for (std::int64_t i = 0; i < j; ++i)
          if (read_id(r->bytes, (row * k + i) * esz, r->type) == v)
            return {errc::invalid_argument, r->where() + ": row " + std::to_string(row) + " names expert " +
                                                std::to_string(v) + " twice"};
      }
    }
    return {};
  }

  // Decodes a canonical tensor to float: F32 and BF16 as stored; an F8_E4M3 `X.weight` with its
  // `X.scale` (128x128 blocks); an I8 `X.weight` with its `X.scale` (1x32 blocks, FP4 pairs, low
  // nibble first) to (out, 2 * stored columns). Works for any alignment (copies element by element).
  [[nodiscard]] result<float_tensor> read_as_float(std::string_view canonical) const {
    auto r = find(canonical);
    if (!r) return r.error();
    float_tensor out;
    out.shape = r->shape;
    const auto n = static_cast<std::size_t>(r->bytes.size() / static_cast<std::size_t>(dtype_size(r->type)));
    const std::byte* p = r->bytes.data();
    switch (r->type) {
      case dtype::f32:
        out.data.resize(n);
        if (n > 0) std::memcpy(out.data.data(), p, n * sizeof(float));
        return out;
      case dtype::bf16:
        out.data.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t b = 0;
          std::memcpy(&b, p + 2 * i, 2);
          out.data[i] = bf16::from_bits(b).to_float();
        }
        return out;
      case dtype::f8_e4m3:
      case dtype::i8:
        break;
      default:
        return status{errc::unsupported,
                      r->where() + ": " + std::string(to_string(r->type)) + " is not a weight dtype"};
    }
    const bool fp8 = r->type == dtype::f8_e4m3;
    if (r->shape.size() != 2 || !canonical.ends_with(".weight"))
      return status{errc::unsupported,
                    r->where() + ": a quantized weight must be a 2-D X.weight with an X.scale"};
    const std::string scale_name = std::string(canonical.substr(0, canonical.size() - 7)) + ".scale";
    auto sc = find(scale_name);
    if (!sc) return sc.error();
    const std::int64_t rows = r->shape[0], cols = fp8 ? r->shape[1] : 2 * r->shape[1];
    const std::vector<std::int64_t> want = fp8 ? std::vector<std::int64_t>{(rows + fp8_block - 1) / fp8_block,
                                                                           (cols + fp8_block - 1) / fp8_block}
                                               : std::vector<std::int64_t>{rows, cols / fp4_block};
    if ((sc->type != dtype::f8_e8m0 && sc->type != dtype::f32) || sc->shape != want ||
        (!fp8 && cols % fp4_block != 0))
      return status{errc::shape_mismatch, sc->where() + ": expected F8_E8M0 " + shape_string(want) + " for " +
                                              r->where() + ", got " + std::string(to_string(sc->type)) + " " +
                                              shape_string(sc->shape)};
    std::vector<ue8m0> scale_values(static_cast<std::size_t>(want[0] * want[1]));
    DSV4_TRY(scales_to_ue8m0(*sc, scale_values));
    const auto* w8 = reinterpret_cast<const fp8_e4m3*>(r->bytes.data());  // 1-byte types: any address
    const auto* w4 = reinterpret_cast<const fp4x2*>(r->bytes.data());
    const ue8m0* s8 = scale_values.data();
    out.shape = {rows, cols};
    out.data.resize(static_cast<std::size_t>(rows * cols));
    for (std::int64_t row = 0; row < rows; ++row) {
      float* dst = out.data.data() + row * cols;
      if (fp8)
        dequantize_fp8_row(w8 + row * cols, s8 + (row / fp8_block) * want[1], 0, cols, dst);
      else
        dequantize_fp4_row(w4 + row * (cols / 2), s8 + row * want[1], 0, cols, dst);
    }
    return out;
  }

 private:
  struct location {
    std::size_t shard = 0, tensor = 0;
    fused_part part = fused_part::whole;
    std::int64_t expert = -1;
  };

  checkpoint() = default;

  static std::string part_suffix(fused_part part, std::int64_t expert, std::int64_t rows = -1) {
    const std::string e = std::to_string(expert);
    const std::string half = rows >= 0 ? std::to_string(rows / 2) : "I";
    const std::string all = rows >= 0 ? std::to_string(rows) : "2I";
    switch (part) {
      case fused_part::gate_rows:
        return "[" + e + ", 0:" + half + "]";
      case fused_part::up_rows:
        return "[" + e + ", " + half + ":" + all + "]";
      case fused_part::expert:
        return "[" + e + "]";
      case fused_part::whole:
        break;
    }
    return "";
  }

  static std::int64_t read_id(std::span<const std::byte> bytes, std::int64_t offset, dtype t) {
    if (t == dtype::i64) {
      std::int64_t v = 0;
      std::memcpy(&v, bytes.data() + offset, 8);
      return v;
    }
    std::int32_t v = 0;
    std::memcpy(&v, bytes.data() + offset, 4);
    return v;
  }

  status add(std::string canonical, location loc) {
    const auto [it, inserted] = map_.emplace(std::move(canonical), loc);
    if (inserted) return {};
    const location& first = it->second;
    return {errc::io_error, label_ + ": " + stored_label(it->first) + " is stored twice, in " +
                                shards_[first.shard].name() + " and " + shards_[loc.shard].name()};
  }

  status build_map() {
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      const auto tensors = shards_[s].tensors();
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        const tensor_info& t = tensors[i];
        std::int64_t layer = 0;
        bool gate_up = false, scale = false;
        if (t.name.ends_with("_scale_inv")) scale_inv_ = true;
        if (is_fused_experts(t.name, scheme_, layer, gate_up, scale)) {
          if (t.shape.size() != 3 || (gate_up && t.shape[1] % 2 != 0))
            return {errc::shape_mismatch, shards_[s].name() + ": tensor " + t.name + ": shape " +
                                              shape_string(t.shape) +
                                              (gate_up ? ", expected (E, 2I, d)" : ", expected (E, d, I)")};
          if (t.shape[0] > max_fused_experts)
            return {errc::out_of_range, shards_[s].name() + ": tensor " + t.name + ": " +
                                            std::to_string(t.shape[0]) + " experts, more than " +
                                            std::to_string(max_fused_experts)};
          const std::string p = "layers." + std::to_string(layer) + ".ffn.experts.";
          const std::string leaf = scale ? ".scale" : ".weight";
          for (std::int64_t e = 0; e < t.shape[0]; ++e) {
            if (gate_up) {
              DSV4_TRY(add(p + std::to_string(e) + ".w1" + leaf, {s, i, fused_part::gate_rows, e}));
              DSV4_TRY(add(p + std::to_string(e) + ".w3" + leaf, {s, i, fused_part::up_rows, e}));
            } else {
              DSV4_TRY(add(p + std::to_string(e) + ".w2" + leaf, {s, i, fused_part::expert, e}));
            }
          }
          continue;
        }
        auto canonical = to_canonical(t.name, scheme_);
        if (!canonical) {
          unrecognized_.push_back(t.name + " in " + shards_[s].name());
          continue;
        }
        DSV4_TRY(add(std::move(*canonical), {s, i}));
      }
    }
    return {};
  }

  static bool plain_file_name(const std::string& n) {
    return !n.empty() && n.size() <= 255 && n != "." && n != ".." && n.find('/') == std::string::npos &&
           n.find('\\') == std::string::npos && n.find('\0') == std::string::npos;
  }

  static result<checkpoint> open_indexed(const std::filesystem::path& dir,
                                         const std::filesystem::path& index) {
    const std::string iname = index.string();
    std::error_code ec;
    const auto size = std::filesystem::file_size(index, ec);
    if (ec) return status{errc::io_error, iname + ": cannot read: " + ec.message()};
    if (size > max_index_bytes) return status{errc::io_error, iname + ": larger than an index may be"};
    std::ifstream in(index, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in && !in.eof()) return status{errc::io_error, iname + ": cannot read"};
    try {
      auto parsed = detail::parse_untrusted_json(text, iname);
      if (!parsed) return parsed.error();
      const nlohmann::json& j = *parsed;
      const auto wm = j.is_object() ? j.find("weight_map") : j.end();
      if (!j.is_object() || wm == j.end() || !wm->is_object())
        return status{errc::io_error, iname + ": needs an object \"weight_map\": {tensor: shard file}"};
      std::map<std::string, std::string> weight_map;  // tensor -> shard
      std::vector<std::string> shard_names;           // in first-use order
      for (const auto& [tensor, shard] : wm->items()) {
        if (!shard.is_string() || !plain_file_name(shard.get<std::string>()))
          return status{errc::io_error, iname + ": tensor " + tensor + ": shard " + shard.dump() +
                                            " is not a plain file name in the checkpoint directory"};
        const auto& sn = shard.get_ref<const std::string&>();
        if (std::find(shard_names.begin(), shard_names.end(), sn) == shard_names.end())
          shard_names.push_back(sn);
        weight_map.emplace(tensor, sn);
      }
      std::vector<safetensors_file> shards;
      for (const auto& sn : shard_names) {
        auto f = safetensors_file::open(dir / sn);
        if (!f) return f.error();  // the shards opened so far are unmapped with `shards`
        shards.push_back(std::move(*f));
      }
      for (const auto& [tensor, sn] : weight_map) {
        const auto k = static_cast<std::size_t>(std::find(shard_names.begin(), shard_names.end(), sn) -
                                                shard_names.begin());
        if (shards[k].find(tensor) == nullptr)
          return status{errc::io_error, iname + ": lists tensor " + tensor + " in " + shards[k].name() +
                                            ", which does not hold it"};
      }
      for (std::size_t k = 0; k < shards.size(); ++k)
        for (const auto& t : shards[k].tensors()) {
          const auto it = weight_map.find(t.name);
          if (it == weight_map.end() || it->second != shard_names[k])
            return status{errc::io_error,
                          shards[k].name() + ": holds tensor " + t.name +
                              (it == weight_map.end() ? ", which the index does not list"
                                                      : ", which the index places in " + it->second)};
        }
      return from_files(std::move(shards), dir.string());
    } catch (const std::exception& e) {
      return status{errc::io_error, iname + ": " + e.what()};
    }
  }

  std::string label_;
  std::vector<safetensors_file> shards_;
  naming_scheme scheme_ = naming_scheme::official;
  std::map<std::string, location, std::less<>> map_;
  std::vector<std::string> unrecognized_;
  bool scale_inv_ = false;  // the file spells block scales X.weight_scale_inv
};

}  // namespace dsv4::io
