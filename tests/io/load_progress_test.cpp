// The load progress hook (io::load_progress): checkpoint::validate and loaded_model::bind call it
// once per tensor of the checkpoint, done strictly increasing to done == total, with the
// checkpoint's canonical names; a hook that returns false stops the load with a status naming the
// cancellation and no model; bind validates by itself, each tensor once.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/config/presets.hpp"
#include "dsv4/io/load_model.hpp"
#include "dsv4/io/random_model.hpp"
#include "dsv4/io/writer.hpp"

using namespace dsv4;
using Catch::Matchers::Contains;

namespace {

const std::string tiny_dir = std::string(DSV4_FIXTURE_DIR) + "/tiny_v4";

// Every call of a hook, and a call at which it answers false (0: never).
struct recorder {
  struct call {
    std::int64_t done, total;
    std::string name;
  };
  std::vector<call> calls;
  std::int64_t stop_at = 0;

  bool operator()(std::int64_t done, std::int64_t total, std::string_view name) {
    calls.push_back({done, total, std::string(name)});
    return done != stop_at;
  }
};

// The calls of a completed load: done = 1, 2, ..., total, total the same in each, every name once
// and the names exactly `names`.
void check_complete(const recorder& r, const std::vector<std::string>& names) {
  REQUIRE(!r.calls.empty());
  const auto total = static_cast<std::int64_t>(names.size());
  std::set<std::string> seen;
  for (std::size_t i = 0; i < r.calls.size(); ++i) {
    INFO("call " << i << ": " << r.calls[i].done << " of " << r.calls[i].total << ", " << r.calls[i].name);
    CHECK(r.calls[i].done == static_cast<std::int64_t>(i) + 1);
    CHECK(r.calls[i].total == total);
    CHECK(seen.insert(r.calls[i].name).second);
  }
  CHECK(r.calls.back().done == total);
  CHECK(seen == std::set<std::string>(names.begin(), names.end()));
}

// The file of `bytes` with tid2eid row 0 of layer 0 naming expert `expert` first.
std::vector<std::byte> with_tid2eid(const std::vector<std::byte>& bytes, std::int64_t expert) {
  auto f = io::safetensors_file::from_bytes(bytes, "random");
  REQUIRE(f.ok());
  io::safetensors_writer w;
  for (const auto& t : f->tensors()) {
    auto raw = f->bytes(t);
    std::vector<std::byte> copy(raw.begin(), raw.end());
    if (t.name == "layers.0.ffn.gate.tid2eid") {
      REQUIRE(t.type == io::dtype::i64);
      std::memcpy(copy.data(), &expert, sizeof expert);
    }
    REQUIRE(w.add(t.name, t.type, t.shape, copy).ok());
  }
  return w.serialize();
}

io::checkpoint open_bytes(const std::vector<std::byte>& bytes, const std::string& label) {
  auto f = io::safetensors_file::from_bytes(bytes, label);
  REQUIRE(f.ok());
  std::vector<io::safetensors_file> shards;
  shards.push_back(std::move(*f));
  auto c = io::checkpoint::from_files(std::move(shards), label);
  REQUIRE(c.ok());
  return std::move(*c);
}

}  // namespace

TEST_CASE("load_progress: validate reports every tensor of the fixture once, in order, to done == total",
          "[io][progress]") {
  auto c = io::checkpoint::open(tiny_dir);
  REQUIRE(c.ok());
  recorder r;
  const status s = c->validate(io::shape_of(config::tiny_v4), io::mtp_policy::automatic, r);
  INFO(s.message());
  REQUIRE(s.ok());
  check_complete(r, c->canonical_names());
  CHECK(r.calls.size() == 162);  // the fixture's tensors (docs/run.md)
}

TEST_CASE("load_progress: load_model and bind report every tensor once, bound as without a hook",
          "[io][progress]") {
  constexpr config::model_config C = config::tiny_v4;
  recorder r;
  auto m = io::load_model<C>(tiny_dir, io::mtp_policy::automatic, r);
  INFO((m.ok() ? std::string() : m.error().message()));
  REQUIRE(m.ok());
  check_complete(r, m->file().canonical_names());
  auto plain = io::load_model<C>(tiny_dir);
  REQUIRE(plain.ok());
  CHECK(m->copied_bytes() == plain->copied_bytes());
  CHECK(m->weights().layers.size() == plain->weights().layers.size());

  // Released storage with the MTP block: FP8 weights with their scales, FP4 experts; the committed
  // file and a random one.
  constexpr config::model_config R = config::tiny_v4_released;
  recorder rf;
  auto fixture =
      io::load_model<R>(std::string(DSV4_FIXTURE_DIR) + "/tiny_v4_released", io::mtp_policy::automatic, rf);
  INFO((fixture.ok() ? std::string() : fixture.error().message()));
  REQUIRE(fixture.ok());
  check_complete(rf, fixture->file().canonical_names());
  auto bytes = io::random_safetensors(io::shape_of(R), true, 2);
  REQUIRE(bytes.ok());
  const std::vector<std::string> names = open_bytes(*bytes, "names").canonical_names();
  recorder rr;
  auto released = io::loaded_model<R>::bind(std::move(*bytes), "random", config::tiny_params,
                                            io::mtp_policy::required, rr);
  INFO((released.ok() ? std::string() : released.error().message()));
  REQUIRE(released.ok());
  CHECK(released->weights().mtp.size() == 1);
  check_complete(rr, names);
}

TEST_CASE("load_progress: a hook that answers false stops the load, naming the cancellation",
          "[io][progress]") {
  constexpr config::model_config C = config::tiny_v4;
  auto c = io::checkpoint::open(tiny_dir);
  REQUIRE(c.ok());
  const auto total = static_cast<std::int64_t>(c->canonical_names().size());

  recorder v;
  v.stop_at = total / 2;
  const status s = c->validate(io::shape_of(C), io::mtp_policy::automatic, v);
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == errc::invalid_state);
  CHECK_THAT(s.message(), Contains("cancelled by the progress hook after " + std::to_string(total / 2) +
                                   " of " + std::to_string(total) + " tensors"));
  CHECK(static_cast<std::int64_t>(v.calls.size()) == total / 2);  // no call after the refusal

  for (const std::int64_t stop : {std::int64_t{1}, total / 2, total}) {
    INFO("stop at " << stop);
    recorder b;
    b.stop_at = stop;
    auto m = io::load_model<C>(tiny_dir, io::mtp_policy::automatic, b);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code() == errc::invalid_state);
    CHECK_THAT(m.error().message(), Contains("load cancelled") && Contains(std::to_string(stop) + " of "));
    CHECK(static_cast<std::int64_t>(b.calls.size()) == stop);
  }
}

TEST_CASE("load_progress: a plain function with a context, and no hook at all", "[io][progress]") {
  struct counter {
    std::int64_t calls = 0, last = 0;
  } n;
  const auto report = [](void* ctx, std::int64_t done, std::int64_t, std::string_view) {
    auto* k = static_cast<counter*>(ctx);
    ++k->calls;
    k->last = done;
    return true;
  };
  const io::load_progress hook(+report, &n);
  CHECK(static_cast<bool>(hook));
  CHECK_FALSE(static_cast<bool>(io::load_progress{}));
  CHECK(io::load_progress{}(1, 2, "x"));  // no hook: the load goes on
  auto c = io::checkpoint::open(tiny_dir);
  REQUIRE(c.ok());
  REQUIRE(c->validate(io::shape_of(config::tiny_v4), io::mtp_policy::automatic, hook).ok());
  CHECK(n.calls == static_cast<std::int64_t>(c->canonical_names().size()));
  CHECK(n.last == n.calls);
}

TEST_CASE("load_progress: bind validates by itself, and a bad tensor stops it before it is reported",
          "[io][progress]") {
  constexpr config::model_config C = config::tiny_v4_released;
  auto bytes = io::random_safetensors(io::shape_of(C), true, 3);
  REQUIRE(bytes.ok());
  const auto bad = with_tid2eid(*bytes, C.n_routed_experts);  // one expert past the last
  // validate and bind refuse it with the same message.
  const status v = open_bytes(bad, "bad").validate(io::shape_of(C));
  REQUIRE_FALSE(v.ok());
  CHECK_THAT(v.message(), Contains("layers.0.ffn.gate.tid2eid") && Contains("row 0 names expert 4"));
  recorder r;
  auto m =
      io::loaded_model<C>::bind(open_bytes(bad, "bad"), config::tiny_params, io::mtp_policy::automatic, r);
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().message() == v.message());
  for (const auto& call : r.calls) CHECK(call.name != "layers.0.ffn.gate.tid2eid");
  // A missing tensor is found from the headers alone, before any tensor is reported.
  io::safetensors_writer w;
  {
    auto f = io::safetensors_file::from_bytes(*bytes, "random");
    REQUIRE(f.ok());
    for (const auto& t : f->tensors())
      if (t.name != "layers.1.attn.wkv.weight") REQUIRE(w.add(t.name, t.type, t.shape, f->bytes(t)).ok());
  }
  const auto short_file = w.serialize();
  recorder missing;
  auto none = io::loaded_model<C>::bind(open_bytes(short_file, "short"), config::tiny_params,
                                        io::mtp_policy::automatic, missing);
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.error().message(), Contains("missing tensor layers.1.attn.wkv.weight"));
  CHECK(missing.calls.empty());
}
