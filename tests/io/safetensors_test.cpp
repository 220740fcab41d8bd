// The safetensors reader: valid files and zero-copy views, and every class of bad header the
// format allows, each rejected with a message naming the file and, where there is one, the tensor.
#include <catch2/catch.hpp>

#include <cstring>
#include <limits>

#include "dsv4/io/safetensors.hpp"
#include "dsv4/io/writer.hpp"
#include "io_test_util.hpp"

using namespace dsv4;
using Catch::Matchers::Contains;

namespace {

status parse_status(const std::vector<std::byte>& file) {
  auto h = io::parse_header(file, "bad.safetensors");
  return h ? status{} : h.error();
}

// The sample file with its header's JSON text replaced through a string substitution.
std::vector<std::byte> edited(const std::string& from, const std::string& to) {
  const auto good = test::sample_writer().serialize();
  std::string json = test::header_text(good);
  const auto at = json.find(from);
  REQUIRE(at != std::string::npos);
  json.replace(at, from.size(), to);
  return test::with_header(good, json);
}

std::vector<std::byte> with_length(std::vector<std::byte> file, std::uint64_t n) {
  std::memcpy(file.data(), &n, 8);
  return file;
}

}  // namespace

TEST_CASE("safetensors: a written file parses back with every dtype, shape and byte") {
  const auto w = test::sample_writer();
  const auto bytes = w.serialize();
  auto f = io::safetensors_file::from_bytes(bytes, "sample");
  REQUIRE(f.ok());
  CHECK(f->tensors().size() == 7);
  CHECK(f->metadata().at("format") == "pt");
  CHECK(f->info().data_offset % 8 == 0);  // the writer pads the header
  const auto* t = f->find("c.fp8");
  REQUIRE(t != nullptr);
  CHECK(t->type == io::dtype::f8_e4m3);
  CHECK(t->shape == std::vector<std::int64_t>{2, 4});
  CHECK(f->find("nope") == nullptr);
  auto fp8 = f->view<fp8_e4m3, 2>("c.fp8");
  REQUIRE(fp8.ok());
  CHECK(fp8->extent(0) == 2);
  CHECK(fp8->extent(1) == 4);
  CHECK((*fp8)(1, 3).bits == static_cast<std::uint8_t>(7 * 13));
  auto ids = f->view<std::int64_t, 2>("g.i64");
  REQUIRE(ids.ok());
  CHECK((*ids)(0, 1) == 6);
  auto i32 = f->view<std::int32_t, 1>("f.i32");
  REQUIRE(i32.ok());
  CHECK((*i32)(1) == -2);
  auto packed = f->view<fp4x2, 2>("e.fp4");  // I8 read as packed FP4
  REQUIRE(packed.ok());
  CHECK((*packed)(1, 1).second().bits == ((0x1f * 3) >> 4));
  // Zero-copy: the view points into the caller's bytes.
  const auto* base = reinterpret_cast<const std::byte*>(bytes.data());
  const auto* p = reinterpret_cast<const std::byte*>(fp8->data());
  CHECK((p >= base && p < base + bytes.size()));
}

TEST_CASE("safetensors: views check dtype, rank and alignment") {
  const auto bytes = test::sample_writer().serialize();
  auto f = io::safetensors_file::from_bytes(bytes, "sample");
  REQUIRE(f.ok());
  auto wrong_type = f->view<float, 2>("c.fp8");
  REQUIRE_FALSE(wrong_type.ok());
  CHECK_THAT(wrong_type.error().message(), Contains("c.fp8") && Contains("F8_E4M3"));
  auto wrong_rank = f->view<float, 1>("a.f32");
  REQUIRE_FALSE(wrong_rank.ok());
  CHECK(wrong_rank.error().code() == errc::shape_mismatch);
  CHECK_FALSE(f->view<float, 2>("missing").ok());
  // The same bytes one byte further: F32 data at an odd address is refused, not misread.
  std::vector<std::byte> shifted(bytes.size() + 1);
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  auto g = io::safetensors_file::from_bytes(std::span<const std::byte>(shifted).subspan(1), "shifted");
  REQUIRE(g.ok());
  auto unaligned = g->view<float, 2>("a.f32");
  REQUIRE_FALSE(unaligned.ok());
  CHECK(unaligned.error().code() == errc::unsupported);
}

TEST_CASE("safetensors: truncated files and impossible header lengths") {
  const auto good = test::sample_writer().serialize();
  for (std::size_t n : {0u, 1u, 7u}) {
    const std::vector<std::byte> tiny(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    const auto s = parse_status(tiny);
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.message(), Contains("bad.safetensors") && Contains("truncated"));
  }
  // Cut inside the header, and inside the data.
  const std::vector<std::byte> cut_header(good.begin(), good.begin() + 40);
  CHECK_THAT(parse_status(cut_header).message(), Contains("runs past the end"));
  const std::vector<std::byte> cut_data(good.begin(), good.end() - 3);
  CHECK_THAT(parse_status(cut_data).message(), Contains("run past"));
  // Lengths that would wrap 8 + N or ask for exabytes are refused before anything is allocated.
  for (std::uint64_t n : {std::uint64_t{1} << 63, std::numeric_limits<std::uint64_t>::max(),
                          std::numeric_limits<std::uint64_t>::max() - 7, io::max_header_bytes + 1}) {
    const auto s = parse_status(with_length(good, n));
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.message(), Contains("exceeds the limit"));
  }
  CHECK_THAT(parse_status(with_length(good, good.size())).message(), Contains("runs past the end"));
}

TEST_CASE("safetensors: malformed JSON and wrong structure") {
  const auto good = test::sample_writer().serialize();
  const auto json = test::header_text(good);
  CHECK_THAT(parse_status(test::with_header(good, json.substr(0, json.size() / 2))).message(),
             Contains("JSON at byte"));
  CHECK_THAT(parse_status(test::with_header(good, "[1, 2]")).message(), Contains("not a JSON object"));
  CHECK_THAT(parse_status(test::with_header(good, std::string(100, '[') + std::string(100, ']'))).message(),
             Contains("nesting deeper than 8 levels"));
  CHECK_THAT(parse_status(edited("\"format\":\"pt\"", "\"format\":7")).message(), Contains("__metadata__"));
  const auto repeated = edited("\"a.f32\"", "\"b.bf16\"");
  CHECK_THAT(parse_status(repeated).message(), Contains("repeated member name \"b.bf16\""));
  CHECK_THAT(parse_status(edited("\"a.f32\":{", "\"a.f32\":{\"extra\":1,")).message(),
             Contains("a.f32") && Contains("unknown field"));
  // Invalid UTF-8 in a name.
  CHECK_THAT(parse_status(edited("\"a.f32\"", "\"a.\xff\xfe\"")).message(), Contains("JSON at byte"));
}

TEST_CASE("safetensors: dtypes, shapes and offsets are checked against each other") {
  auto msg = [](const std::vector<std::byte>& f) { return parse_status(f).message(); };
  CHECK_THAT(msg(edited("\"F32\"", "\"F16\"")), Contains("a.f32") && Contains("unsupported dtype \"F16\""));
  CHECK_THAT(msg(edited("\"F32\"", "32")), Contains("dtype is not a string"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":[3,3]")),
             Contains("a.f32") && Contains("needs 36 bytes"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":[2,-3]")), Contains("non-negative integer"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":[2,3.0]")), Contains("non-negative integer"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":[4294967296,4294967296]")), Contains("overflows"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":[1,1,1,1,1,1,1,1,2,3]")), Contains("at most 8"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":\"2x3\"")), Contains("shape is not an array"));
  CHECK_THAT(msg(edited("\"data_offsets\":[16,40]", "\"data_offsets\":[40,16]")), Contains("begin <= end"));
  CHECK_THAT(msg(edited("\"data_offsets\":[16,40]", "\"data_offsets\":[16]")), Contains("[begin, end]"));
  CHECK_THAT(msg(edited("\"data_offsets\":[16,40]", "\"data_offsets\":[16,18446744073709551615]")),
             Contains("2^63"));
  // a.f32 moved onto g.i64's bytes: the two ranges overlap.
  CHECK_THAT(msg(edited("\"data_offsets\":[16,40]", "\"data_offsets\":[0,24]")), Contains("overlap"));
  // A range past the data section.
  CHECK_THAT(msg(edited("\"data_offsets\":[0,16]", "\"data_offsets\":[1000000,1000016]")),
             Contains("g.i64") && Contains("run past"));
  CHECK_THAT(msg(edited("\"shape\":[2,3]", "\"shape\":[1,3]")), Contains("needs 12 bytes"));
  CHECK_THAT(msg(edited("\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]",
                        "\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[28,40]")),
             Contains("a.f32") && Contains("unused"));
}

TEST_CASE("safetensors: trailing bytes and zero-size tensors") {
  io::safetensors_writer w;
  REQUIRE(w.add<float>("empty", {0, 4}, std::span<const float>()).ok());
  REQUIRE(w.add<float>("one", {1}, std::vector<float>{1.0f}).ok());
  auto bytes = w.serialize();
  auto f = io::safetensors_file::from_bytes(bytes, "z");
  REQUIRE(f.ok());
  CHECK(f->find("empty")->byte_size() == 0);
  bytes.push_back(std::byte{0});
  CHECK_THAT(parse_status(bytes).message(), Contains("the tensors use"));
}

TEST_CASE("safetensors: open maps the file, and a failed open leaves nothing mapped") {
  test::scratch_dir dir("map");
  const auto good = test::sample_writer().serialize();
  const auto path = dir.path / "x.safetensors";
  test::write_file(path, good);
  {
    auto f = io::safetensors_file::open(path);
    REQUIRE(f.ok());
    CHECK(test::live_mappings(path) == 1);
    auto v = f->view<float, 2>("a.f32");
    REQUIRE(v.ok());
    auto moved = std::move(*f);  // the mapping moves with the object; views stay valid
    CHECK(test::live_mappings(path) == 1);
    CHECK(moved.find("a.f32") != nullptr);
  }
  CHECK(test::live_mappings(path) == 0);
  // Each bad file fails after mapping it; none stays mapped.
  const std::vector<std::vector<std::byte>> bad{with_length(good, std::uint64_t{1} << 63),
                                                test::with_header(good, "{"), edited("\"F32\"", "\"F64\""),
                                                edited("\"data_offsets\":[16,40]", "\"data_offsets\":[0,24]"),
                                                std::vector<std::byte>(good.begin(), good.end() - 1)};
  for (const auto& b : bad) {
    test::write_file(path, b);
    auto f = io::safetensors_file::open(path);
    REQUIRE_FALSE(f.ok());
    CHECK_THAT(f.error().message(), Contains(path.string()));
    CHECK(test::live_mappings(path) == 0);
  }
  test::write_file(path, {});
  CHECK_THAT(io::safetensors_file::open(path).error().message(), Contains("truncated"));
  CHECK_FALSE(io::safetensors_file::open(dir.path / "missing.safetensors").ok());
  CHECK_THAT(io::safetensors_file::open(dir.path).error().message(), Contains("not a regular file"));
}
