// A checkpoint directory as the weights of model C: load_model<C>(dir) reads config.json, or
// inference/config.json when the directory has only that (hf_config.hpp), checks it against C naming the
// first field that differs, opens and validates the safetensors (checkpoint.hpp: every tensor present with
// its shape and an accepted dtype, nothing extra, every tid2eid row valid), then binds every tensor to its
// view in model::model_weights<C>.
//
// Zero-copy where the stored dtype is the view's and the address is aligned for it: FP8 and FP4
// weights with their scales always (one-byte elements), F32 and BF16 tensors when aligned. Copies
// are made, once, for what the views need in another type: norm weights, mHC parameters, sinks,
// position biases and the gate bias stored as BF16 are widened to fp32; a BF16 matrix of an f32
// model is widened; an F32 matrix of a BF16 model is narrowed only when every value is a BF16
// value (a lossy conversion is refused, naming the tensor); tid2eid is narrowed to int32; block
// scales stored F32 (transformers' `weight_scale_inv` with scale_fmt "float") become E8M0 when every
// value is a power of two, and are refused naming the tensor otherwise.
// loaded_model keeps the mapping and the copies alive (move-only; the views stay valid when it
// moves).
//
// Validation happens once per load, inside bind: it checks what the headers say first
// (checkpoint::check_inventory: every tensor present with an accepted dtype and its shape, nothing
// extra; no tensor data read), then the values of each tensor that has values to check
// (checkpoint::check_values: F32 block scales, tid2eid rows) just before binding it, and reports
// each tensor to the optional io::load_progress hook (checkpoint.hpp): one call per tensor,
// done = 1 .. total = the number of tensors, in binding order. bind therefore takes a checkpoint
// that has not been validated (validate() before bind would check every tensor twice). A hook
// returning false stops the load with io::load_cancelled()'s status and no model; so does any
// failed check, and nothing half-bound is returned.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_matrix.hpp"
#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/hf_config.hpp"
#include "dsv4/io/inventory.hpp"
#include "dsv4/io/model_shape.hpp"
#include "dsv4/model/weights.hpp"

namespace dsv4::io {

template <config::model_config C>
class loaded_model {
 public:
  loaded_model(const loaded_model&) = delete;
  loaded_model& operator=(const loaded_model&) = delete;
  loaded_model(loaded_model&&) noexcept = default;
  loaded_model& operator=(loaded_model&&) noexcept = default;
  ~loaded_model() = default;

  // The directory's config.json and safetensors (see the banner). mtp: whether the MTP blocks are
  // expected (automatic: when the file holds any). progress: called per tensor (see the banner).
  static result<loaded_model> open(const std::filesystem::path& dir, mtp_policy mtp = mtp_policy::automatic,
                                   load_progress progress = {}) {
    auto cfg_file = config_path(dir);  // config.json, else inference/config.json
    if (!cfg_file) return cfg_file.error();
    auto cfg = read_hf_config(*cfg_file);
    if (!cfg) return cfg.error();
    DSV4_TRY(check_matches<C>(cfg->shape, cfg_file->string()));
    auto ckpt = checkpoint::open(dir);
    if (!ckpt) return ckpt.error();
    return bind(std::move(*ckpt), cfg->params, mtp, progress);
  }

  // A checkpoint already open (and not yet validated: bind validates it, see the banner), with the
  // parameters to run it with.
  static result<loaded_model> bind(checkpoint ckpt, const config::model_params& params,
                                   mtp_policy mtp = mtp_policy::automatic, load_progress progress = {}) {
    DSV4_TRY(config::check_params(C, params));
    try {
      auto expected = ckpt.inventory(shape_of(C), mtp);
      if (!expected) return expected.error();
      DSV4_TRY(ckpt.check_inventory(*expected));
      binding b{*expected, progress};
      loaded_model m(std::move(ckpt), params);
      m.binding_ = &b;
      status s = m.bind_all();
      if (s.ok()) s = m.check_rest();
      m.binding_ = nullptr;
      if (!s.ok()) return s;
      return m;
    } catch (const std::bad_alloc&) {
      return status{errc::out_of_range, "load_model: out of memory"};
    }
  }

  // A checkpoint of one safetensors file held in memory (random_model.hpp), kept alive here.
  static result<loaded_model> bind(std::vector<std::byte> file, std::string label,
                                   const config::model_params& params, mtp_policy mtp = mtp_policy::automatic,
                                   load_progress progress = {}) {
    const std::span<const std::byte> bytes(file);  // the buffer stays where it is when file moves
    auto f = safetensors_file::from_bytes(bytes, label);
    if (!f) return f.error();
    std::vector<safetensors_file> shards;
    shards.push_back(std::move(*f));
    auto ckpt = checkpoint::from_files(std::move(shards), std::move(label));
    if (!ckpt) return ckpt.error();
    auto m = bind(std::move(*ckpt), params, mtp, progress);
    if (m) m->file_bytes_ = std::move(file);
    return m;
  }

  const model::model_weights<C>& weights() const { return w_; }
  const config::model_params& params() const { return params_; }
  const checkpoint& file() const { return ckpt_; }
  // Bytes copied out of the mapping (converted tensors).
  std::size_t copied_bytes() const { return copied_; }

 private:
  using mats = model::matrices_of<C>;
  static constexpr std::int64_t d = C.d_model;

  loaded_model(checkpoint c, const config::model_params& p) : ckpt_(std::move(c)), params_(p) {}

  // The state of one bind(): the inventory (check_inventory passed: its tensors all stored with
  // their dtypes and shapes, nothing else), which of its tensors were checked and reported, and
  // the hook.
  struct binding {
    binding(const std::vector<expected_tensor>& e, load_progress p)
        : expected(e), done(e.size()), progress(p) {
      index.reserve(e.size());
      for (std::size_t i = 0; i < e.size(); ++i) index.emplace(e[i].name, i);
    }
    const std::vector<expected_tensor>& expected;
    std::unordered_map<std::string_view, std::size_t> index;  // canonical name -> position in expected
    std::vector<bool> done;
    std::int64_t count = 0;  // tensors done
    load_progress progress;
  };

  // Checks the values of inventory entry i (checkpoint::check_values) and reports it to the hook.
  status finish(std::size_t i) {
    binding& b = *binding_;
    const expected_tensor& e = b.expected[i];
    DSV4_TRY(ckpt_.check_values(e, C.n_routed_experts));
    b.done[i] = true;
    const auto total = static_cast<std::int64_t>(b.expected.size());
    if (!b.progress(++b.count, total, e.name)) return load_cancelled(ckpt_.label(), b.count, total);
    return {};
  }

  // The tensor `name` for binding: checked the first time it is asked for (during bind), then found.
  result<tensor_ref> take(const std::string& name) {
    if (binding_ != nullptr)
      if (const auto it = binding_->index.find(name);
          it != binding_->index.end() && !binding_->done[it->second])
        DSV4_TRY(finish(it->second));
    return ckpt_.find(name);
  }

  // The inventory's tensors bind_all did not ask for, checked and reported, so that bind validates
  // all of them whatever the binding reads.
  status check_rest() {
    for (std::size_t i = 0; i < binding_->expected.size(); ++i)
      if (!binding_->done[i]) DSV4_TRY(finish(i));
    return {};
  }

  struct free_bytes {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  template <class T>
  T* own(std::size_t count) {
    const std::size_t bytes = std::max<std::size_t>(count * sizeof(T), 1);
    owned_.emplace_back(static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{64})));
    copied_ += count * sizeof(T);
    return reinterpret_cast<T*>(owned_.back().get());
  }

  // A tensor as fp32: the mapping when stored F32 and aligned, else a widened copy.
  template <std::size_t Rank>
  result<tensor_view<const float, Rank>> floats(const std::string& name) {
    auto r = take(name);
    if (!r) return r.error();
    if (r->type == dtype::f32) {
      auto v = r->template view<float, Rank>();
      if (v) return v;
    }
    auto t = ckpt_.read_as_float(name);
    if (!t) return t.error();
    float* p = own<float>(t->data.size());
    std::copy(t->data.begin(), t->data.end(), p);
    extents_t<Rank> e{};
    for (std::size_t i = 0; i < Rank; ++i) e[i] = t->shape[i];
    return tensor_view<const float, Rank>(p, e);
  }

  // X.weight (and X.scale) as the matrix type W.
  template <weight_matrix W>
  result<W> matrix(const std::string& prefix) {
    const std::string name = prefix + ".weight";
    if constexpr (std::same_as<W, f32_matrix>) {
      auto v = floats<2>(name);
      if (!v) return v.error();
      return W{*v};
    } else if constexpr (std::same_as<W, bf16_matrix>) {
      auto r = take(name);
      if (!r) return r.error();
      if (r->type == dtype::bf16)
        if (auto v = r->template view<bf16, 2>(); v) return W{*v};
      auto t = ckpt_.read_as_float(name);
      if (!t) return t.error();
      bf16* p = own<bf16>(t->data.size());
      for (std::size_t i = 0; i < t->data.size(); ++i) {
        p[i] = bf16(t->data[i]);
        if (!(p[i].to_float() == t->data[i]) && !std::isnan(t->data[i]))
          return status{errc::invalid_argument,
                        r->where() + ": element " + std::to_string(i) + " (" + std::to_string(t->data[i]) +
                            ") is not a BF16 value; the model stores this matrix in BF16"};
      }
      return W{tensor_view<const bf16, 2>(p, {t->shape[0], t->shape[1]})};
    } else {
      using element = std::conditional_t<std::same_as<W, fp8_matrix>, fp8_e4m3, fp4x2>;
      auto wr = take(name);
      if (!wr) return wr.error();
      auto wv = wr->template view<element, 2>();
      if (!wv) return wv.error();
      auto sr = take(prefix + ".scale");  // or X.weight_scale_inv (checkpoint.hpp)
      if (!sr) return sr.error();
      if (sr->type == dtype::f32 && sr->shape.size() == 2) {  // F32 powers of two: converted once
        const std::size_t n = sr->bytes.size() / sizeof(float);
        ue8m0* p = own<ue8m0>(n);
        DSV4_TRY(scales_to_ue8m0(*sr, std::span<ue8m0>(p, n)));
        return W{*wv, tensor_view<const ue8m0, 2>(p, {sr->shape[0], sr->shape[1]})};
      }
      auto sv = sr->template view<ue8m0, 2>();
      if (!sv) return sv.error();
      return W{*wv, *sv};
    }
  }

  status site(const std::string& p, const char* which, mhc::hc_site_weights& s) {
    const std::string base = p + "hc_" + which;
    auto fn = floats<2>(base + "_fn");
    if (!fn) return fn.error();
    auto scale = floats<1>(base + "_scale");
    if (!scale) return scale.error();
    auto b = floats<1>(base + "_base");
    if (!b) return b.error();
    s = {*fn, *scale, *b};
    return {};
  }
  status head(const std::string& p, mhc::hc_head_weights& h, tensor_view<const float, 1>& norm) {
    auto fn = floats<2>(p + "hc_head_fn");
    if (!fn) return fn.error();
    auto scale = floats<1>(p + "hc_head_scale");
    if (!scale) return scale.error();
    auto b = floats<1>(p + "hc_head_base");
    if (!b) return b.error();
    h = {*fn, *scale, *b};
    auto n = floats<1>(p + "norm.weight");
    if (!n) return n.error();
    norm = *n;
    return {};
  }

  // target = *r, or r's status.
  template <class T, class U>
  static status set(T& target, result<U> r) {
    if (!r) return r.error();
    target = std::move(*r);
    return {};
  }

  status compressor(const std::string& p, attn::compressor_weights<typename mats::other>& c) {
    DSV4_TRY(set(c.wkv, matrix<typename mats::other>(p + ".wkv")));
    DSV4_TRY(set(c.wgate, matrix<typename mats::other>(p + ".wgate")));
    DSV4_TRY(set(c.ape, floats<2>(p + ".ape")));
    DSV4_TRY(set(c.norm, floats<1>(p + ".norm.weight")));
    return {};
  }

  status block(const std::string& p, int layer, bool mtp, model::block_weights<C>& b) {
    using linear = typename mats::linear;
    DSV4_TRY(set(b.attn_norm, floats<1>(p + "attn_norm.weight")));
    DSV4_TRY(set(b.ffn_norm, floats<1>(p + "ffn_norm.weight")));
    DSV4_TRY(site(p, "attn", b.hc_attn));
    DSV4_TRY(site(p, "ffn", b.hc_ffn));
    auto& a = b.attn;
    DSV4_TRY(set(a.wq_a, matrix<linear>(p + "attn.wq_a")));
    DSV4_TRY(set(a.q_norm, floats<1>(p + "attn.q_norm.weight")));
    DSV4_TRY(set(a.wq_b, matrix<linear>(p + "attn.wq_b")));
    DSV4_TRY(set(a.wkv, matrix<linear>(p + "attn.wkv")));
    DSV4_TRY(set(a.kv_norm, floats<1>(p + "attn.kv_norm.weight")));
    DSV4_TRY(set(a.wo_a, matrix<linear>(p + "attn.wo_a")));
    DSV4_TRY(set(a.wo_b, matrix<linear>(p + "attn.wo_b")));
    DSV4_TRY(set(a.attn_sink, floats<1>(p + "attn.attn_sink")));
    const int ratio = C.compress_ratios[static_cast<std::size_t>(layer)];
    if (ratio > 0) DSV4_TRY(compressor(p + "attn.compressor", a.compressor));
    if (ratio > 0 && ratio == C.csa_ratio) {
      DSV4_TRY(set(a.indexer.wq_b, matrix<linear>(p + "attn.indexer.wq_b")));
      DSV4_TRY(set(a.indexer.weights_proj, matrix<typename mats::other>(p + "attn.indexer.weights_proj")));
      DSV4_TRY(compressor(p + "attn.indexer.compressor", a.indexer.compressor));
    }
    DSV4_TRY(set(b.gate, matrix<typename mats::other>(p + "ffn.gate")));
    if (!mtp && config::is_hash_layer(C, layer)) {
      DSV4_TRY(tid2eid(p + "ffn.gate.tid2eid", b.tid2eid));
    } else {
      DSV4_TRY(set(b.gate_bias, floats<1>(p + "ffn.gate.bias")));
    }
    b.experts.resize(static_cast<std::size_t>(C.n_routed_experts));
    for (int e = 0; e < C.n_routed_experts; ++e) {
      const std::string ep = p + "ffn.experts." + std::to_string(e) + ".";
      auto& x = b.experts[static_cast<std::size_t>(e)];
      DSV4_TRY(set(x.w1, matrix<typename mats::expert>(ep + "w1")));
      DSV4_TRY(set(x.w2, matrix<typename mats::expert>(ep + "w2")));
      DSV4_TRY(set(x.w3, matrix<typename mats::expert>(ep + "w3")));
    }
    if (C.n_shared_experts > 0) {
      moe::swiglu_weights<linear> s;
      DSV4_TRY(set(s.w1, matrix<linear>(p + "ffn.shared_experts.w1")));
      DSV4_TRY(set(s.w2, matrix<linear>(p + "ffn.shared_experts.w2")));
      DSV4_TRY(set(s.w3, matrix<linear>(p + "ffn.shared_experts.w3")));
      b.shared = s;
    }
    return {};
  }

  // The (vocab, k) table as int32 (take() checked every row).
  status tid2eid(const std::string& name, tensor_view<const std::int32_t, 2>& out) {
    auto r = take(name);
    if (!r) return r.error();
    const std::int64_t rows = r->shape[0], k = r->shape[1], esz = r->type == dtype::i64 ? 8 : 4;
    std::int32_t* p = own<std::int32_t>(static_cast<std::size_t>(rows * k));
    for (std::int64_t i = 0; i < rows * k; ++i) {
      std::int64_t v = 0;
      if (esz == 8) {
        std::memcpy(&v, r->bytes.data() + i * 8, 8);
      } else {
        std::int32_t v32 = 0;
        std::memcpy(&v32, r->bytes.data() + i * 4, 4);
        v = v32;
      }
      p[i] = static_cast<std::int32_t>(v);
    }
    out = tensor_view<const std::int32_t, 2>(p, {rows, k});
    return {};
  }

  status bind_all() {
    DSV4_TRY(set(w_.embed, matrix<typename mats::other>("embed")));
    DSV4_TRY(set(w_.head, matrix<typename mats::other>("head")));
    DSV4_TRY(head("", w_.hc_head, w_.norm));
    w_.layers.resize(static_cast<std::size_t>(C.n_layers));
    for (int l = 0; l < C.n_layers; ++l)
      DSV4_TRY(block("layers." + std::to_string(l) + ".", l, false, w_.layers[static_cast<std::size_t>(l)]));
    if (C.n_mtp_layers > 0 && ckpt_.contains("mtp.0.e_proj.weight")) {
      w_.mtp.resize(static_cast<std::size_t>(C.n_mtp_layers));
      for (int m = 0; m < C.n_mtp_layers; ++m) {
        const std::string p = "mtp." + std::to_string(m) + ".";
        auto& x = w_.mtp[static_cast<std::size_t>(m)];
        DSV4_TRY(block(p, C.n_layers + m, true, x.block));
        DSV4_TRY(set(x.e_proj, matrix<typename mats::linear>(p + "e_proj")));
        DSV4_TRY(set(x.h_proj, matrix<typename mats::linear>(p + "h_proj")));
        DSV4_TRY(set(x.enorm, floats<1>(p + "enorm.weight")));
        DSV4_TRY(set(x.hnorm, floats<1>(p + "hnorm.weight")));
        DSV4_TRY(head(p, x.hc_head, x.norm));
      }
    }
    return {};
  }

  binding* binding_ = nullptr;         // during bind() only
  std::vector<std::byte> file_bytes_;  // the file of a checkpoint made in memory
  checkpoint ckpt_;
  config::model_params params_;
  std::vector<std::unique_ptr<std::byte[], free_bytes>> owned_;
  std::size_t copied_ = 0;
  model::model_weights<C> w_;
};

template <config::model_config C>
result<loaded_model<C>> load_model(const std::filesystem::path& dir, mtp_policy mtp = mtp_policy::automatic,
                                   load_progress progress = {}) {
  return loaded_model<C>::open(dir, mtp, progress);
}

}  // namespace dsv4::io
