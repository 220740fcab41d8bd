// The writer: reader(writer(x)) round trips of every dtype through files (the quantizers' own
// tests are in tests/core/weight_quant_test.cpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "dsv4/core/quant.hpp"
#include "dsv4/core/weight_quant.hpp"
#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/writer.hpp"
#include "io_test_util.hpp"
#include "random.hpp"

using namespace dsv4;
using Catch::Matchers::Contains;

TEST_CASE("writer: reader(writer(x)) returns every dtype's bytes and values") {
  test::scratch_dir dir("roundtrip");
  const index_t rows = 130, cols = 160;
  const auto w = test::random_normal(static_cast<std::size_t>(rows * cols), 21);
  const tensor_view<const float, 2> wv(w.data(), {rows, cols});
  io::safetensors_writer out;
  REQUIRE(out.add_linear("layers.0.attn.wq_a", config::weight_format::fp8_e4m3_block128, wv).ok());
  REQUIRE(out.add_linear("layers.0.ffn.experts.0.w1", config::weight_format::fp4_e2m1_block32, wv).ok());
  REQUIRE(out.add_linear("layers.0.attn.wkv", config::weight_format::bf16, wv).ok());
  REQUIRE(out.add_linear("layers.0.attn.wq_b", config::weight_format::f32, wv).ok());
  REQUIRE(
      out.add<std::int64_t>("layers.0.ffn.gate.tid2eid", {2, 3}, std::vector<std::int64_t>{0, 1, 2, 3, 4, 5})
          .ok());
  out.set_metadata("format", "pt");
  REQUIRE(out.write(dir.path / "model.safetensors").ok());
  CHECK_FALSE(std::filesystem::exists(dir.path / "model.safetensors.tmp"));
  auto c = io::checkpoint::open(dir.path);
  REQUIRE(c.ok());
  CHECK(c->shards()[0].metadata().at("format") == "pt");
  // FP8: the decoded values equal the core dequantization of an independent quantization.
  std::vector<fp8_e4m3> q8(w.size());
  std::vector<ue8m0> s8(2 * 2);
  REQUIRE(quantize_fp8_block128(wv, {q8.data(), {rows, cols}}, {s8.data(), {2, 2}}).ok());
  std::vector<float> ref(w.size());
  REQUIRE(kernel<dequantize_fp8_op, cpu>::run(
              {{q8.data(), {rows, cols}}, {s8.data(), {2, 2}}, {ref.data(), {rows, cols}}})
              .ok());
  auto fp8 = c->read_as_float("layers.0.attn.wq_a.weight");
  REQUIRE(fp8.ok());
  CHECK(fp8->shape == std::vector<std::int64_t>{rows, cols});
  CHECK(fp8->data == ref);
  auto scale = c->find("layers.0.attn.wq_a.scale");
  REQUIRE(scale.ok());
  CHECK(scale->type == io::dtype::f8_e8m0);
  CHECK(std::memcmp(scale->bytes.data(), s8.data(), s8.size()) == 0);
  // FP4: stored (out, in/2) I8, decoded (out, in).
  auto fp4_stored = c->find("layers.0.ffn.experts.0.w1.weight");
  REQUIRE(fp4_stored.ok());
  CHECK(fp4_stored->type == io::dtype::i8);
  CHECK(fp4_stored->shape == std::vector<std::int64_t>{rows, cols / 2});
  auto fp4 = c->read_as_float("layers.0.ffn.experts.0.w1.weight");
  REQUIRE(fp4.ok());
  CHECK(fp4->shape == std::vector<std::int64_t>{rows, cols});
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    err += (fp4->data[i] - w[i]) * (fp4->data[i] - w[i]);
    norm += w[i] * w[i];
  }
  CHECK(std::sqrt(err / norm) < 0.2);  // FP4 keeps about 3 bits
  auto b16 = c->read_as_float("layers.0.attn.wkv.weight");
  auto f32 = c->read_as_float("layers.0.attn.wq_b.weight");
  REQUIRE((b16.ok() && f32.ok()));
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(b16->data[i] == round_to_bf16(w[i]));
    CHECK(f32->data[i] == w[i]);
  }
  auto ids = c->find("layers.0.ffn.gate.tid2eid");
  REQUIRE(ids.ok());
  auto idv = ids->view<std::int64_t, 2>();
  REQUIRE(idv.ok());
  CHECK((*idv)(1, 2) == 5);
  CHECK_FALSE(c->read_as_float("layers.0.ffn.gate.tid2eid").ok());
  CHECK_THAT(c->read_as_float("layers.0.attn.wq_a.scale").error().message(), Contains("not a weight dtype"));
}

TEST_CASE("writer: a whole micro model round-trips through shards and validates") {
  test::scratch_dir one("whole"), many("shards");
  io::safetensors_writer w;
  REQUIRE(test::add_random_model(w, test::micro_shape(), true, 4).ok());
  REQUIRE(w.write(one.path / "model.safetensors").ok());
  REQUIRE(w.write_sharded(many.path, 4096).ok());
  auto a = io::checkpoint::open(one.path);
  auto b = io::checkpoint::open(many.path);
  REQUIRE((a.ok() && b.ok()));
  CHECK(a->validate(test::micro_shape()).ok());
  CHECK(b->validate(test::micro_shape()).ok());
  CHECK(b->shards().size() > 3);
  CHECK(a->canonical_names() == b->canonical_names());
  for (const auto& name : a->canonical_names()) {
    auto x = a->find(name);
    auto y = b->find(name);
    REQUIRE(x->bytes.size() == y->bytes.size());
    CHECK(std::memcmp(x->bytes.data(), y->bytes.data(), x->bytes.size()) == 0);
    // Every tensor starts aligned for its dtype, so views are zero-copy.
    CHECK(reinterpret_cast<std::uintptr_t>(x->bytes.data()) %
              static_cast<std::uintptr_t>(io::dtype_size(x->type)) ==
          0);
  }
}

TEST_CASE("writer: refuses bad tensors") {
  io::safetensors_writer w;
  const std::vector<float> four(4);
  REQUIRE(w.add<float>("a", {2, 2}, four).ok());
  CHECK_THAT(w.add<float>("a", {4}, four).message(), Contains("added twice"));
  CHECK_THAT(w.add<float>("b", {3}, four).message(), Contains("needs 12 bytes, got 16"));
  CHECK_THAT(w.add<float>("__metadata__", {4}, four).message(), Contains("cannot name a tensor"));
  CHECK_THAT(w.add<float>("c", {-4}, four).message(), Contains("bad shape"));
  CHECK_THAT(w.add_linear("d", config::weight_format::fp4_e2m1_block32,
                          tensor_view<const float, 2>(four.data(), {1, 4}))
                 .message(),
             Contains("in % 32"));
  test::scratch_dir dir("unwritable");
  CHECK_FALSE(w.write(dir.path / "no_such_dir" / "x.safetensors").ok());
  CHECK(w.size() == 1);
}

namespace {

// Every tensor of `w`'s file streamed through safetensors_stream_writer into `path`, written in
// `order` (file order when empty, else reversed), skipping `skip` and truncating `short_one`.
status stream_copy(const io::safetensors_writer& w, const std::filesystem::path& path, bool reversed,
                   const std::string& skip = "", const std::string& short_one = "") {
  const auto bytes = w.serialize();
  auto f = io::safetensors_file::from_bytes(bytes, "src");
  if (!f) return f.error();
  io::safetensors_stream_writer s;
  for (const auto& t : f->tensors()) DSV4_TRY(s.declare(t.name, t.type, t.shape));
  for (const auto& [k, v] : f->metadata()) s.set_metadata(k, v);
  DSV4_TRY(s.open(path));
  std::vector<std::string> order = s.order();
  if (reversed) std::reverse(order.begin(), order.end());
  for (const auto& name : order) {
    if (name == skip) continue;
    const auto* t = f->find(name);
    auto data = f->bytes(*t);
    if (name == short_one) data = data.first(data.size() - 1);
    std::vector<std::byte> one(data.begin(), data.end());  // produced one at a time
    DSV4_TRY(s.write(name, std::span<const std::byte>(one)));
  }
  return s.finish();
}

}  // namespace

TEST_CASE("writer: the streaming writer writes the in-memory writer's bytes, in any order") {
  io::safetensors_writer micro;
  REQUIRE(test::add_random_model(micro, test::micro_shape(), true, 9).ok());
  for (const io::safetensors_writer* w : {&micro}) {
    const auto expected = w->serialize();
    for (bool reversed : {false, true}) {
      test::scratch_dir dir("stream");
      const auto path = dir.path / "model.safetensors";
      const auto s = stream_copy(*w, path, reversed);
      INFO(s.message());
      REQUIRE(s.ok());
      CHECK(test::read_file(path) == expected);
      CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));
    }
  }
  auto sample = test::sample_writer();  // with metadata and every dtype
  test::scratch_dir dir("stream_sample");
  REQUIRE(stream_copy(sample, dir.path / "s.safetensors", true).ok());
  CHECK(test::read_file(dir.path / "s.safetensors") == sample.serialize());
}

TEST_CASE("writer: the streaming writer leaves no file on a wrong-size, missing or unknown tensor") {
  io::safetensors_writer micro;
  REQUIRE(test::add_random_model(micro, test::micro_shape(), true, 9).ok());
  const auto files_in = [](const std::filesystem::path& d) {
    return std::distance(std::filesystem::directory_iterator(d), std::filesystem::directory_iterator{});
  };
  {
    test::scratch_dir dir("stream_short");
    const auto s = stream_copy(micro, dir.path / "m.safetensors", false, "", "layers.0.attn.wq_a.weight");
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.message(), Contains("layers.0.attn.wq_a.weight: F8_E4M3 (16, 32) needs 512 bytes, got 511"));
    CHECK(files_in(dir.path) == 0);
  }
  {
    test::scratch_dir dir("stream_missing");
    const auto s = stream_copy(micro, dir.path / "m.safetensors", true, "layers.1.attn.attn_sink");
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.message(), Contains("layers.1.attn.attn_sink was declared but not written (1 missing)"));
    CHECK(files_in(dir.path) == 0);
  }
  {
    test::scratch_dir dir("stream_misc");
    const auto path = dir.path / "m.safetensors";
    io::safetensors_stream_writer s;
    REQUIRE(s.declare<float>("a", {2}).ok());
    CHECK_THAT(s.declare<float>("a", {3}).message(), Contains("a declared twice"));
    // The first error is final.
    CHECK_THAT(s.open(path).message(), Contains("a declared twice"));
    CHECK(files_in(dir.path) == 0);
    io::safetensors_stream_writer t;
    REQUIRE(t.declare<float>("a", {2}).ok());
    REQUIRE(t.declare<std::int64_t>("b", {1}).ok());
    REQUIRE(t.open(path).ok());
    CHECK(files_in(dir.path) == 1);  // m.safetensors.tmp
    const std::vector<float> a{1, 2};
    REQUIRE(t.write<float>("a", a).ok());
    CHECK_THAT(t.write<float>("a", a).message(), Contains("a written twice"));
    CHECK(files_in(dir.path) == 0);
    io::safetensors_stream_writer u;
    REQUIRE(u.declare<float>("a", {2}).ok());
    REQUIRE(u.open(path).ok());
    CHECK_THAT(u.write<float>("c", a).message(), Contains("c was not declared"));
    CHECK(files_in(dir.path) == 0);
    {
      io::safetensors_stream_writer abandoned;  // destroyed unfinished: its temporary file goes
      REQUIRE(abandoned.declare<float>("a", {2}).ok());
      REQUIRE(abandoned.open(path).ok());
      REQUIRE(abandoned.write<float>("a", a).ok());
    }
    CHECK(files_in(dir.path) == 0);
  }
}
