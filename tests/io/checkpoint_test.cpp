// Checkpoints: the transformers-written tiny_v4 fixture, the same model under transformers' module
// names with fused experts, sharded official checkpoints, and every kind of bad checkpoint with a
// message naming the file and the tensor as the file spells it.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/hf_config.hpp"
#include "dsv4/io/writer.hpp"
#include "io_test_util.hpp"

using namespace dsv4;
using Catch::Matchers::Contains;

namespace {

const std::string tiny_dir = std::string(DSV4_FIXTURE_DIR) + "/tiny_v4";

io::model_shape tiny_shape() {
  auto cfg = io::read_hf_config(tiny_dir + "/config.json");
  REQUIRE(cfg.ok());
  return cfg->shape;
}

// A micro official checkpoint written into dir (one file), with `edit` applied to the writer first.
template <class Edit>
std::filesystem::path micro_file(const test::scratch_dir& dir, Edit edit, bool with_mtp = true) {
  io::safetensors_writer w;
  REQUIRE(test::add_random_model(w, test::micro_shape(), with_mtp, 3).ok());
  edit(w);
  const auto path = dir.path / "model.safetensors";
  REQUIRE(w.write(path).ok());
  return path;
}

// The micro model without `skip` and with whatever `add` adds.
io::safetensors_writer micro_writer_without(const std::string& skip) {
  io::safetensors_writer all;
  REQUIRE(test::add_random_model(all, test::micro_shape(), true, 3).ok());
  const auto bytes = all.serialize();
  auto f = io::safetensors_file::from_bytes(bytes, "micro");
  REQUIRE(f.ok());
  io::safetensors_writer w;
  for (const auto& t : f->tensors())
    if (t.name != skip) REQUIRE(w.add(t.name, t.type, t.shape, f->bytes(t)).ok());
  return w;
}

// The message of opening and validating a micro checkpoint ("ok" when it passes).
std::string validate_dir(const std::filesystem::path& p) {
  auto c = io::checkpoint::open(p);
  if (!c) return c.error().message();
  const auto s = c->validate(test::micro_shape());
  return s.ok() ? "ok" : s.message();
}

io::safetensors_file must_parse(std::span<const std::byte> bytes, const std::string& name) {
  auto f = io::safetensors_file::from_bytes(bytes, name);
  REQUIRE(f.ok());
  return std::move(*f);
}

}  // namespace

TEST_CASE("checkpoint: the save_pretrained fixture loads by canonical names") {
  auto c = io::checkpoint::open(tiny_dir);
  REQUIRE(c.ok());
  CHECK(c->scheme() == io::naming_scheme::hf_saved);
  const auto v = c->validate(tiny_shape());
  INFO(v.message());
  CHECK(v.ok());
  auto kv_norm = c->find("layers.0.attn.kv_norm.weight");
  REQUIRE(kv_norm.ok());
  CHECK(kv_norm->label == "model.layers.0.attn.norm.weight");
  CHECK(kv_norm->shape == std::vector<std::int64_t>{32});
  auto view = kv_norm->view<float, 1>();  // zero-copy into the mapping
  REQUIRE(view.ok());
  CHECK(view->extent(0) == 32);
  CHECK(c->find("embed.weight")->label == "model.embed_tokens.weight");
  CHECK(c->find("head.weight")->label == "head.weight");
  CHECK(c->find("hc_head_fn")->label == "model.hc_head.hc_fn");
  CHECK(c->find("layers.3.ffn.experts.3.w2.weight")->shape == std::vector<std::int64_t>{64, 16});
  auto ids = c->find("layers.1.ffn.gate.tid2eid");
  REQUIRE(ids.ok());
  CHECK(ids->type == io::dtype::i64);
  CHECK_FALSE(c->contains("mtp.0.e_proj.weight"));  // transformers writes no MTP block
  // Messages use the file's own names.
  const std::vector<std::int64_t> wrong{64};
  const auto e = c->expect("layers.0.attn.kv_norm.weight", io::tensor_kind::dense, wrong);
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.message(),
             Contains("model.layers.0.attn.norm.weight (canonical layers.0.attn.kv_norm.weight)") &&
                 Contains("model.safetensors") && Contains("shape (32), expected (64)"));
  CHECK_THAT(
      c->find("layers.9.attn.wq_a.weight").error().message(),
      Contains("missing tensor model.layers.9.attn.wq_a.weight (canonical layers.9.attn.wq_a.weight)"));
  // Against another shape: the first expected tensor that disagrees.
  io::model_shape other = tiny_shape();
  other.q_lora_rank = 64;
  CHECK_THAT(c->validate(other).message(),
             Contains("model.layers.0.attn.wq_a.weight") && Contains("expected (64, 64)"));
  // Requiring the MTP block that transformers does not write.
  CHECK_THAT(c->validate(tiny_shape(), io::mtp_policy::required).message(),
             Contains("missing tensor mtp.0."));
}

TEST_CASE("checkpoint: transformers' module names with fused experts hold the same tensors") {
  auto saved = io::checkpoint::open(tiny_dir);
  REQUIRE(saved.ok());
  std::ifstream in(std::string(DSV4_FIXTURE_DIR) + "/io/tiny_v4_module_names.json");
  const auto listing = nlohmann::json::parse(in).at("tensors");
  // Rebuild every tensor transformers lists under its module name from the saved file's bytes.
  io::safetensors_writer w;
  std::set<std::string> module_names;
  for (const auto& [name, info] : listing.items()) {
    module_names.insert(name);
    const auto shape = info.at("shape").get<std::vector<std::int64_t>>();
    const auto type = io::parse_dtype(info.at("dtype").get<std::string>());
    REQUIRE(type);
    std::int64_t layer = 0;
    bool gate_up = false;
    std::vector<std::byte> bytes;
    if (io::is_fused_experts(name, io::naming_scheme::hf_modules, layer, gate_up)) {
      for (std::int64_t e = 0; e < shape[0]; ++e) {
        const std::string p = "layers." + std::to_string(layer) + ".ffn.experts." + std::to_string(e) + ".";
        for (const char* part :
             gate_up ? std::vector<const char*>{"w1", "w3"} : std::vector<const char*>{"w2"}) {
          auto r = saved->find(p + part + ".weight");
          REQUIRE(r.ok());
          bytes.insert(bytes.end(), r->bytes.begin(), r->bytes.end());
        }
      }
    } else {
      const auto canonical = io::to_canonical(name, io::naming_scheme::hf_modules);
      INFO(name);
      REQUIRE(canonical);  // every module name transformers uses is known
      auto r = saved->find(*canonical);
      REQUIRE(r.ok());
      CHECK(r->shape == shape);
      bytes.assign(r->bytes.begin(), r->bytes.end());
    }
    REQUIRE(w.add(name, *type, shape, bytes).ok());
  }
  test::scratch_dir dir("modules");
  REQUIRE(w.write(dir.path / "model.safetensors").ok());
  auto mod = io::checkpoint::open(dir.path);
  REQUIRE(mod.ok());
  CHECK(mod->scheme() == io::naming_scheme::hf_modules);
  const auto v = mod->validate(tiny_shape());
  INFO(v.message());
  CHECK(v.ok());
  // The same canonical names, the same bytes (expert rows sliced out of the fused tensors).
  CHECK(mod->canonical_names() == saved->canonical_names());
  for (const auto& name : saved->canonical_names()) {
    auto a = saved->find(name);
    auto b = mod->find(name);
    REQUIRE(b.ok());
    CHECK(a->shape == b->shape);
    REQUIRE(a->bytes.size() == b->bytes.size());
    CHECK(std::memcmp(a->bytes.data(), b->bytes.data(), a->bytes.size()) == 0);
    // The map from canonical names to module names covers exactly transformers' names.
    const auto n = io::to_scheme(name, io::naming_scheme::hf_modules);
    REQUIRE(n);
    CHECK(module_names.count(n->name) == 1);
  }
  auto w3 = mod->find("layers.2.ffn.experts.1.w3.weight");
  REQUIRE(w3.ok());
  CHECK(w3->label == "model.layers.2.mlp.experts.gate_up_proj[1, 16:32]");
  CHECK(w3->view<float, 2>().ok());
}

TEST_CASE("checkpoint: sharded official checkpoints through the index") {
  test::scratch_dir dir("sharded");
  io::safetensors_writer w;
  REQUIRE(test::add_random_model(w, test::micro_shape(), true, 5).ok());
  REQUIRE(w.write_sharded(dir.path, 8192).ok());
  auto c = io::checkpoint::open(dir.path);
  REQUIRE(c.ok());
  CHECK(c->shards().size() > 2);
  CHECK(c->scheme() == io::naming_scheme::official);
  const auto v = c->validate(test::micro_shape());
  INFO(v.message());
  CHECK(v.ok());
  CHECK(c->contains("mtp.0.h_proj.scale"));
  // Without the MTP block, an official checkpoint of a shape with n_mtp_layers = 1 is incomplete.
  test::scratch_dir d2("nomtp");
  micro_file(
      d2, [](auto&) {}, false);
  CHECK_THAT(validate_dir(d2.path), Contains("missing tensor mtp.0."));
  auto c2 = io::checkpoint::open(d2.path);
  CHECK(c2->validate(test::micro_shape(), io::mtp_policy::absent).ok());
}

TEST_CASE("checkpoint: missing, extra, misshaped and mistyped tensors") {
  test::scratch_dir dir("bad");
  const auto path = dir.path / "model.safetensors";
  REQUIRE(micro_writer_without("layers.1.attn.indexer.wq_b.scale").write(path).ok());
  CHECK_THAT(validate_dir(dir.path),
             Contains(dir.path.string()) && Contains("missing tensor layers.1.attn.indexer.wq_b.scale"));
  auto extra = micro_writer_without("");
  REQUIRE(extra.add<float>("layers.0.attn.bogus", {1}, std::vector<float>{1}).ok());
  REQUIRE(extra.write(path).ok());
  CHECK_THAT(validate_dir(dir.path), Contains("extra tensor layers.0.attn.bogus") && Contains(path.string()));
  auto misshaped = micro_writer_without("layers.0.attn_norm.weight");
  REQUIRE(misshaped.add<float>("layers.0.attn_norm.weight", {31}, std::vector<float>(31)).ok());
  REQUIRE(misshaped.write(path).ok());
  CHECK_THAT(validate_dir(dir.path),
             Contains("layers.0.attn_norm.weight") && Contains("shape (31), expected (32)"));
  auto mistyped = micro_writer_without("layers.0.attn.attn_sink");
  REQUIRE(mistyped.add<bf16>("layers.0.attn.attn_sink", {2}, std::vector<bf16>(2)).ok());
  REQUIRE(mistyped.write(path).ok());
  CHECK_THAT(validate_dir(dir.path),
             Contains("layers.0.attn.attn_sink") && Contains("dtype BF16, expected F32"));
  // A shape that disagrees with the file (the config differs).
  io::model_shape wide = test::micro_shape();
  wide.n_routed_experts = 3;
  REQUIRE(micro_writer_without("").write(path).ok());
  auto c = io::checkpoint::open(dir.path);
  REQUIRE(c.ok());
  CHECK_THAT(c->validate(wide).message(),
             Contains("layers.0.ffn.gate.weight") && Contains("expected (3, 32)"));
  wide.o_groups = 3;  // breaks a model_config rule before any tensor is looked at
  CHECK_THAT(c->validate(wide).message(), Contains("output_groups_divide_heads"));
}

TEST_CASE("checkpoint: tid2eid entries outside the experts") {
  test::scratch_dir dir("tid2eid");
  for (std::int64_t bad : {std::int64_t{2}, std::int64_t{-1}, std::int64_t{1} << 40}) {
    auto w = micro_writer_without("layers.0.ffn.gate.tid2eid");
    std::vector<std::int64_t> ids(16, 1);
    ids[11] = bad;
    REQUIRE(w.add<std::int64_t>("layers.0.ffn.gate.tid2eid", {16, 1}, ids).ok());
    REQUIRE(w.write(dir.path / "model.safetensors").ok());
    auto c = io::checkpoint::open(dir.path);
    REQUIRE(c.ok());
    const auto s = c->validate(test::micro_shape());
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == errc::out_of_range);
    CHECK_THAT(s.message(), Contains("layers.0.ffn.gate.tid2eid") &&
                                Contains("row 11 names expert " + std::to_string(bad)) &&
                                Contains("model.safetensors"));
  }
  // A row naming one expert twice (k = 2 in the tiny fixture's shape), in an I32 table.
  io::safetensors_writer w;
  std::vector<std::int32_t> ids{0, 1, 3, 3};
  REQUIRE(w.add<std::int32_t>("layers.0.ffn.gate.tid2eid", {2, 2}, ids).ok());
  const auto bytes = w.serialize();
  std::vector<io::safetensors_file> shards;
  shards.push_back(must_parse(bytes, "t.safetensors"));
  auto c = io::checkpoint::from_files(std::move(shards), "t");
  REQUIRE(c.ok());
  CHECK_THAT(c->check_tid2eid("layers.0.ffn.gate.tid2eid", 4).message(),
             Contains("row 1 names expert 3 twice"));
}

TEST_CASE("checkpoint: bad indexes and shards, and nothing left mapped") {
  test::scratch_dir dir("index");
  io::safetensors_writer w;
  REQUIRE(test::add_random_model(w, test::micro_shape(), true, 9).ok());
  REQUIRE(w.write_sharded(dir.path, 8192).ok());
  const auto index_path = dir.path / "model.safetensors.index.json";
  const auto good_index = test::read_file(index_path);
  const std::string good_text(reinterpret_cast<const char*>(good_index.data()), good_index.size());
  auto index = nlohmann::json::parse(good_text);
  auto with_index = [&](const std::string& text) -> std::string {
    test::write_text(index_path, text);
    return validate_dir(dir.path);
  };
  auto edited = [&](auto edit) -> std::string {
    auto j = index;
    edit(j);
    return with_index(j.dump());
  };
  CHECK_THAT(with_index("{"), Contains("JSON at byte"));
  CHECK_THAT(with_index("{\"metadata\": {}}"), Contains("weight_map"));
  CHECK_THAT(edited([](auto& j) { j["weight_map"]["embed.weight"] = "../model.safetensors"; }),
             Contains("embed.weight") && Contains("not a plain file name"));
  CHECK_THAT(edited([](auto& j) { j["weight_map"]["embed.weight"] = 3; }), Contains("not a plain file name"));
  CHECK_THAT(edited([](auto& j) { j["weight_map"]["layers.0.ghost"] = j["weight_map"]["embed.weight"]; }),
             Contains("lists tensor layers.0.ghost") && Contains("does not hold it"));
  CHECK_THAT(edited([](auto& j) { j["weight_map"].erase("norm.weight"); }),
             Contains("holds tensor norm.weight, which the index does not list"));
  const std::string shard1 = index["weight_map"]["embed.weight"];
  const std::string other = index["weight_map"]["mtp.0.norm.weight"];
  REQUIRE(shard1 != other);
  CHECK_THAT(edited([&](auto& j) { j["weight_map"]["embed.weight"] = other; }),
             Contains("embed.weight") && Contains("does not hold it"));
  CHECK_THAT(edited([](auto& j) { j["weight_map"]["embed.weight"] = "model-99999-of-99999.safetensors"; }),
             Contains("model-99999-of-99999.safetensors") && Contains("cannot open"));
  // A corrupt later shard: the open fails and the shards mapped before it are unmapped.
  test::write_text(index_path, good_text);
  const auto last = dir.path / other;
  auto bytes = test::read_file(last);
  bytes.resize(bytes.size() - 1);
  test::write_file(last, bytes);
  auto c = io::checkpoint::open(dir.path);
  REQUIRE_FALSE(c.ok());
  CHECK_THAT(c.error().message(), Contains(last.string()));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path))
    CHECK(test::live_mappings(entry.path()) == 0);
  CHECK_THAT(io::checkpoint::open(dir.path / "nothing").error().message(), Contains("nothing"));
  test::scratch_dir empty("empty");
  CHECK_THAT(io::checkpoint::open(empty.path).error().message(), Contains("neither"));
}

TEST_CASE("checkpoint: ambiguous files: mixed schemes, names stored twice, misshaped fused experts") {
  auto open_bytes = [](std::vector<std::vector<std::byte>>& files) {
    std::vector<io::safetensors_file> shards;
    for (std::size_t i = 0; i < files.size(); ++i)
      shards.push_back(must_parse(files[i], "shard" + std::to_string(i)));
    return io::checkpoint::from_files(std::move(shards), "ckpt");
  };
  const std::vector<float> one{1.0f};
  io::safetensors_writer a, b;
  REQUIRE(a.add<float>("embed.weight", {1}, one).ok());
  REQUIRE(b.add<float>("model.layers.0.attn.wq_a.weight", {1}, one).ok());
  std::vector<std::vector<std::byte>> mixed{a.serialize(), b.serialize()};
  CHECK_THAT(open_bytes(mixed).error().message(), Contains("mixes naming schemes"));
  std::vector<std::vector<std::byte>> twice{a.serialize(), a.serialize()};
  CHECK_THAT(open_bytes(twice).error().message(),
             Contains("embed.weight is stored twice, in shard0 and shard1"));
  io::safetensors_writer f;
  REQUIRE(f.add<float>("model.layers.0.mlp.experts.gate_up_proj", {2, 3, 1}, std::vector<float>(6)).ok());
  std::vector<std::vector<std::byte>> fused{f.serialize()};
  CHECK_THAT(open_bytes(fused).error().message(),
             Contains("gate_up_proj") && Contains("expected (E, 2I, d)"));
  io::safetensors_writer g;
  REQUIRE(
      g.add<float>("model.layers.0.mlp.experts.down_proj", {100000, 0, 1}, std::span<const float>()).ok());
  std::vector<std::vector<std::byte>> many{g.serialize()};
  CHECK_THAT(open_bytes(many).error().message(), Contains("more than 65536"));
  // A name save_pretrained never writes is an extra tensor.
  io::safetensors_writer h;
  REQUIRE(h.add<float>("model.layers.0.attn.kv_norm.weight", {1}, one).ok());
  std::vector<std::vector<std::byte>> odd{h.serialize()};
  auto c = open_bytes(odd);
  REQUIRE(c.ok());
  CHECK(c->unrecognized().size() == 1);
}

namespace {

// The micro model with every block scale renamed X.weight_scale_inv (transformers' fine-grained
// FP8 convention), stored as F8_E8M0 or as F32 (`f32`), with `edit` applied to each F32 scale.
template <class Edit>
io::safetensors_writer micro_with_scale_inv(bool f32, Edit edit, bool keep_official_too = false) {
  io::safetensors_writer all;
  REQUIRE(test::add_random_model(all, test::micro_shape(), true, 3).ok());
  const auto bytes = all.serialize();
  auto f = io::safetensors_file::from_bytes(bytes, "micro");
  REQUIRE(f.ok());
  io::safetensors_writer w;
  for (const auto& t : f->tensors()) {
    if (!t.name.ends_with(".scale") || t.type != io::dtype::f8_e8m0) {
      REQUIRE(w.add(t.name, t.type, t.shape, f->bytes(t)).ok());
      continue;
    }
    if (keep_official_too) REQUIRE(w.add(t.name, t.type, t.shape, f->bytes(t)).ok());
    const std::string name = t.name.substr(0, t.name.size() - 6) + ".weight_scale_inv";
    if (!f32) {
      REQUIRE(w.add(name, t.type, t.shape, f->bytes(t)).ok());
      continue;
    }
    const auto raw = f->bytes(t);
    std::vector<float> v(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i)
      v[i] = ue8m0::from_bits(static_cast<std::uint8_t>(raw[i])).to_float();
    edit(name, v);
    REQUIRE(w.add<float>(name, t.shape, v).ok());
  }
  return w;
}

}  // namespace

TEST_CASE("checkpoint: block scales spelled X.weight_scale_inv, E8M0 or F32 powers of two") {
  io::safetensors_writer plain;
  REQUIRE(test::add_random_model(plain, test::micro_shape(), true, 3).ok());
  const auto plain_bytes = plain.serialize();
  auto reference = io::checkpoint::from_files(
      [&] {
        std::vector<io::safetensors_file> v;
        v.push_back(must_parse(plain_bytes, "plain"));
        return v;
      }(),
      "plain");
  REQUIRE(reference.ok());
  for (bool f32 : {false, true}) {
    INFO((f32 ? "F32 scales" : "F8_E8M0 scales"));
    test::scratch_dir dir("scale_inv");
    const auto w = micro_with_scale_inv(f32, [](const std::string&, std::vector<float>&) {});
    REQUIRE(w.write(dir.path / "model.safetensors").ok());
    auto c = io::checkpoint::open(dir.path);
    REQUIRE(c.ok());
    CHECK(c->canonical_names() == reference->canonical_names());
    const auto v = c->validate(test::micro_shape());
    INFO(v.message());
    CHECK(v.ok());
    for (const char* name :
         {"layers.1.attn.wq_a.weight", "layers.0.ffn.experts.1.w2.weight", "mtp.0.e_proj.weight"}) {
      auto a = c->read_as_float(name);
      auto b = reference->read_as_float(name);
      INFO(name << (a.ok() ? std::string() : ": " + a.error().message()));
      REQUIRE(a.ok());
      REQUIRE(b.ok());
      CHECK(a->data == b->data);
    }
    auto s = c->scales("layers.1.attn.wq_a.scale");
    REQUIRE(s.ok());
    auto sr = reference->find("layers.1.attn.wq_a.scale");
    REQUIRE(sr.ok());
    CHECK(std::memcmp(s->data(), sr->bytes.data(), sr->bytes.size()) == 0);
    // Messages use the file's spelling.
    CHECK_THAT(c->stored_label("layers.9.attn.wq_a.scale"), Contains("layers.9.attn.wq_a.weight_scale_inv"));
  }
}

TEST_CASE("checkpoint: F32 scales that are not powers of two, and scales stored twice") {
  test::scratch_dir dir("scale_inv_bad");
  const auto w = micro_with_scale_inv(true, [](const std::string& name, std::vector<float>& v) {
    if (name == "layers.1.attn.wq_a.weight_scale_inv") v[0] *= 1.5f;  // max_abs / 448: not a power of two
  });
  REQUIRE(w.write(dir.path / "model.safetensors").ok());
  auto c = io::checkpoint::open(dir.path);
  REQUIRE(c.ok());
  const auto v = c->validate(test::micro_shape());
  REQUIRE_FALSE(v.ok());
  CHECK_THAT(v.message(),
             Contains("layers.1.attn.wq_a.weight_scale_inv (canonical layers.1.attn.wq_a.scale)") &&
                 Contains("element 0") && Contains("not a power of two"));
  auto f = c->read_as_float("layers.1.attn.wq_a.weight");
  REQUIRE_FALSE(f.ok());
  CHECK_THAT(f.error().message(),
             Contains("layers.1.attn.wq_a.weight_scale_inv") && Contains("not a power of two"));
  CHECK(c->read_as_float("layers.0.attn.wq_a.weight").ok());

  test::scratch_dir d2("scale_twice");
  const auto both = micro_with_scale_inv(
      false, [](const std::string&, std::vector<float>&) {}, true);
  REQUIRE(both.write(d2.path / "model.safetensors").ok());
  auto c2 = io::checkpoint::open(d2.path);
  REQUIRE_FALSE(c2.ok());
  CHECK_THAT(c2.error().message(), Contains("is stored twice"));
}
