// Bad input at the boundary of Newton-Schulz, Muon and AdamW: negative and overflowing extents,
// shapes too large to allocate, overlapping views, non-finite gradients, hyper-parameters outside
// their domain. Each is refused with a status that names the argument or the parameter's slot,
// with the optimizer (state, step counts) and the parameter as they were; and a second step of
// either optimizer allocates nothing.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "allocations.hpp"
#include "batch_views.hpp"
#include "dsv4/optim/adamw.hpp"
#include "dsv4/optim/muon.hpp"
#include "random.hpp"

// The huge-shape tests need malloc to fail rather than AddressSanitizer to stop the program.
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }

namespace {
using dsv4::errc;
using dsv4::index_t;
using dsv4::status;
using dsv4::test::cview;
using dsv4::test::random_normal;
using dsv4::test::view;
using namespace dsv4::optim;

using ns = newton_schulz<v4_hybrid_schedule>;

constexpr float pos_inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("newton_schulz refuses negative extents", "[optim][validation]") {
  std::vector<float> g = random_normal(64, 401), out(64, 5.0f), ws(4096);
  const auto out_before = out;
  for (const auto& [n, m] : {std::pair<index_t, index_t>{-2, 3}, {3, -2}, {-2, -2}}) {
    INFO(n << " x " << m);
    const status s = dsv4::run<dsv4::cpu>(ns::params{{g.data(), {n, m}}, {out.data(), {n, m}}, ws});
    CHECK(s.code() == errc::shape_mismatch);
    CHECK(contains(s.message(), "newton_schulz in"));
  }
  CHECK(out == out_before);
}

TEST_CASE("newton_schulz refuses overlapping in, out and workspace", "[optim][validation]") {
  constexpr index_t n = 6, m = 8;
  std::vector<float> mem = random_normal(static_cast<std::size_t>(2 * n * m), 411);
  std::vector<float> ws(static_cast<std::size_t>(2 * n * m + 4096));
  const auto before = mem;
  // out starts inside in (not the same view).
  status s = dsv4::run<dsv4::cpu>(ns::params{{mem.data(), {n, m}}, {mem.data() + 5, {n, m}}, ws});
  CHECK(s.code() == errc::invalid_argument);
  CHECK(contains(s.message(), "newton_schulz out"));
  CHECK(mem == before);
  // The workspace on top of the input.
  std::vector<float> out(static_cast<std::size_t>(n * m));
  s = dsv4::run<dsv4::cpu>(ns::params{{ws.data() + 10, {n, m}}, {out.data(), {n, m}}, ws});
  CHECK(s.code() == errc::invalid_argument);
  CHECK(contains(s.message(), "newton_schulz workspace"));
  // out == in exactly is in place, allowed.
  CHECK(dsv4::run<dsv4::cpu>(ns::params{{mem.data(), {n, m}}, {mem.data(), {n, m}}, ws}).ok());
}

TEST_CASE("optimizer add of a shape too large to allocate returns a status and changes nothing",
          "[optim][validation]") {
  const index_t big = index_t{1} << 24;  // (2^24)^2 floats = 4 PiB: more than any address space
  muon<> mu;
  adamw aw;
  REQUIRE(mu.add({1, 4, 6}).ok());
  REQUIRE(aw.add({1, 4, 6}).ok());
  const index_t mu_state = mu.state_floats(), aw_state = aw.state_floats();
  const index_t mu_ws = mu.workspace_floats();
  const auto rm = mu.add({1, big, big});
  CHECK(rm.error().code() == errc::out_of_range);
  CHECK(contains(rm.error().message(), "muon add"));
  const auto ra = aw.add({big, big, 1});
  CHECK(ra.error().code() == errc::out_of_range);
  CHECK(contains(ra.error().message(), "adamw add"));
  CHECK(mu.state_floats() == mu_state);
  CHECK(mu.workspace_floats() == mu_ws);
  CHECK(aw.state_floats() == aw_state);
  // Still usable: the next parameter gets the next slot.
  const auto next = aw.add({1, 2, 2});
  REQUIRE(next.ok());
  CHECK(*next == 1);
}

TEST_CASE("optimizer add of a shape whose size overflows int64 is refused", "[optim][validation]") {
  adamw aw;
  muon<> mu;
  // 2^66 elements (wraps to 0), and 2^62 elements whose two moments need 2^63 floats.
  for (const dsv4::extents_t<3> shape :
       {dsv4::extents_t<3>{index_t{1} << 22, index_t{1} << 22, index_t{1} << 22},
        dsv4::extents_t<3>{index_t{1} << 30, index_t{1} << 30, 4}}) {
    INFO(dsv4::shape_string<3>(shape));
    const auto r = aw.add(shape);
    CHECK(r.error().code() == errc::out_of_range);
    CHECK(contains(r.error().message(), "adamw add"));
    CHECK(aw.state_floats() == 0);
  }
  CHECK(adamw::state_size({index_t{1} << 30, index_t{1} << 30, 4}).error().code() == errc::out_of_range);
  CHECK(muon<>::state_size({1, 0, 3}).error().code() == errc::invalid_argument);
  const auto r = mu.add({1, index_t{1} << 40, index_t{1} << 40});
  CHECK(r.error().code() == errc::out_of_range);
  CHECK(mu.state_floats() == 0);
  CHECK(mu.workspace_floats() == 0);
  // Negative extents name the shape.
  const auto neg = mu.add({1, -4, 6});
  CHECK(neg.error().code() == errc::invalid_argument);
  CHECK(contains(neg.error().message(), "(1, -4, 6)"));
}

TEST_CASE("muon: a non-finite gradient is reported with its slot; momentum and weights unchanged",
          "[optim][validation]") {
  constexpr index_t b = 2, n = 5, m = 7;
  muon<> opt, reference;
  REQUIRE(opt.add({1, 3, 3}).ok());
  REQUIRE(reference.add({1, 3, 3}).ok());
  const auto slot = opt.add({b, n, m});
  REQUIRE(slot.ok());
  REQUIRE(*reference.add({b, n, m}) == *slot);
  auto w = random_normal(static_cast<std::size_t>(b * n * m), 421);
  auto w_ref = w;
  const auto g1 = random_normal(w.size(), 422), g2 = random_normal(w.size(), 423);
  REQUIRE(opt.step(*slot, view(w, b, n, m), cview(g1, b, n, m), 0.02f).ok());
  REQUIRE(reference.step(*slot, view(w_ref, b, n, m), cview(g1, b, n, m), 0.02f).ok());
  const auto w_before = w;
  const auto mom = [&] {
    const auto v = opt.momentum(*slot);
    return std::vector<float>(v.data(), v.data() + v.size());
  };
  const auto mom_before = mom();
  for (const float bad : {qnan, pos_inf, -pos_inf}) {
    auto g = g2;
    g[static_cast<std::size_t>(n * m + 2 * m + 3)] = bad;  // matrix 1, row 2, column 3
    const status s = opt.step(*slot, view(w, b, n, m), cview(g, b, n, m), 0.02f);
    CHECK(s.code() == errc::invalid_argument);
    CHECK(contains(s.message(), "slot 1"));
    CHECK(contains(s.message(), "(1, 2, 3)"));
    CHECK(w == w_before);
    CHECK(mom() == mom_before);
  }
  // The failed steps were not counted: the next step equals a second step of an untouched twin.
  REQUIRE(opt.step(*slot, view(w, b, n, m), cview(g2, b, n, m), 0.02f).ok());
  REQUIRE(reference.step(*slot, view(w_ref, b, n, m), cview(g2, b, n, m), 0.02f).ok());
  CHECK(w == w_ref);
}

TEST_CASE("adamw: a non-finite gradient or moment is reported with its slot; state and weights unchanged",
          "[optim][validation]") {
  constexpr index_t b = 1, n = 3, m = 4;
  adamw opt;
  const auto slot = opt.add({b, n, m});
  REQUIRE(slot.ok());
  auto w = random_normal(static_cast<std::size_t>(n * m), 431);
  const auto g1 = random_normal(w.size(), 432);
  REQUIRE(opt.step(*slot, view(w, b, n, m), cview(g1, b, n, m), 0.01f).ok());
  const auto w_before = w;
  const auto moments = [&] {
    const auto m1 = opt.first_moment(*slot), m2 = opt.second_moment(*slot);
    std::vector<float> v(m1.data(), m1.data() + m1.size());
    v.insert(v.end(), m2.data(), m2.data() + m2.size());
    return v;
  };
  const auto before = moments();
  // 1e20 is finite, but its square is not: the second moment would become pos_inf.
  for (const float bad : {qnan, pos_inf, 1e20f}) {
    INFO(bad);
    auto g = random_normal(w.size(), 433);
    g[7] = bad;  // (0, 1, 3)
    const status s = opt.step(*slot, view(w, b, n, m), cview(g, b, n, m), 0.01f);
    CHECK(s.code() == errc::invalid_argument);
    CHECK(contains(s.message(), "slot 0"));
    CHECK(contains(s.message(), "(0, 1, 3)"));
    CHECK(w == w_before);
    CHECK(moments() == before);
  }
}

TEST_CASE("Hyper-parameters outside their domain are refused, naming the field", "[optim][validation]") {
  struct adamw_case {
    adamw_hparams hp;
    const char* field;
  };
  for (const adamw_case& c :
       {adamw_case{{1.0f, 0.95f, 1e-20f, 0.1f}, "beta1"}, adamw_case{{-0.1f, 0.95f, 1e-20f, 0.1f}, "beta1"},
        adamw_case{{0.9f, 1.5f, 1e-20f, 0.1f}, "beta2"}, adamw_case{{0.9f, qnan, 1e-20f, 0.1f}, "beta2"},
        adamw_case{{0.9f, 0.95f, 0.0f, 0.1f}, "eps"}, adamw_case{{0.9f, 0.95f, pos_inf, 0.1f}, "eps"},
        adamw_case{{0.9f, 0.95f, 1e-20f, -0.1f}, "weight_decay"},
        adamw_case{{0.9f, 0.95f, 1e-20f, pos_inf}, "weight_decay"}}) {
    INFO(c.field);
    adamw opt(c.hp);
    const auto r = opt.add({1, 2, 2});
    CHECK(r.error().code() == errc::invalid_argument);
    CHECK(contains(r.error().message(), c.field));
    CHECK(opt.state_floats() == 0);
  }
  struct muon_case {
    muon_hparams hp;
    const char* field;
  };
  muon_hparams bad_precision;
  bad_precision.precision = static_cast<ns_precision>(7);
  for (const muon_case& c :
       {muon_case{{.momentum = 1.0f}, "momentum"}, muon_case{{.momentum = -0.5f}, "momentum"},
        muon_case{{.momentum = qnan}, "momentum"}, muon_case{{.update_rms = pos_inf}, "update_rms"},
        muon_case{{.weight_decay = qnan}, "weight_decay"}, muon_case{bad_precision, "precision"}}) {
    INFO(c.field);
    muon<> opt(c.hp);
    const auto r = opt.add({1, 2, 2});
    CHECK(r.error().code() == errc::invalid_argument);
    CHECK(contains(r.error().message(), c.field));
  }
  // The learning rate enters at step(): finite and non-negative.
  adamw aw;
  muon<> mu;
  const auto sa = aw.add({1, 2, 3}), sm = mu.add({1, 2, 3});
  REQUIRE(sa.ok());
  REQUIRE(sm.ok());
  auto w = random_normal(6, 441);
  const auto g = random_normal(6, 442), w_before = w;
  for (const float lr : {pos_inf, qnan, -1e-3f}) {
    CHECK(contains(aw.step(*sa, view(w, 1, 2, 3), cview(g, 1, 2, 3), lr).message(), "learning rate"));
    CHECK(contains(mu.step(*sm, view(w, 1, 2, 3), cview(g, 1, 2, 3), lr).message(), "learning rate"));
  }
  CHECK(w == w_before);
  // The defaults are DeepSeek-V4's (spec §12).
  CHECK(adamw_hparams{}.beta1 == 0.9f);
  CHECK(adamw_hparams{}.beta2 == 0.95f);
  CHECK(adamw_hparams{}.eps == 1e-20f);
  CHECK(adamw_hparams{}.weight_decay == 0.1f);
  CHECK(muon_hparams{}.momentum == 0.95f);
  CHECK(muon_hparams{}.update_rms == 0.18f);
  CHECK(muon_hparams{}.weight_decay == 0.1f);
  CHECK(muon_hparams{}.nesterov);
}

TEST_CASE("Optimizers refuse weights and grads that overlap", "[optim][validation]") {
  muon<> mu;
  adamw aw;
  const auto sm = mu.add({1, 3, 4}), sa = aw.add({1, 3, 4});
  REQUIRE(sm.ok());
  REQUIRE(sa.ok());
  auto mem = random_normal(16, 451);
  const auto before = mem;
  const dsv4::tensor_view<float, 3> w(mem.data(), {1, 3, 4});
  const dsv4::tensor_view<const float, 3> g(mem.data() + 4, {1, 3, 4});
  status s = mu.step(*sm, w, g, 0.01f);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(contains(s.message(), "overlap"));
  s = aw.step(*sa, w, g, 0.01f);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(mem == before);
  // grads that are the optimizer's own state.
  auto w2 = random_normal(12, 452);
  s = aw.step(*sa, view(w2, 1, 3, 4), aw.first_moment(*sa), 0.01f);
  CHECK(s.code() == errc::invalid_argument);
}

TEST_CASE("A second optimizer step allocates nothing: Muon and AdamW", "[optim][validation]") {
  constexpr index_t b = 2, n = 24, m = 40;
  auto w = random_normal(static_cast<std::size_t>(b * n * m), 461);
  const auto g = random_normal(w.size(), 462);
  muon<> mu;
  adamw aw;
  const auto sm = mu.add({b, n, m}), sa = aw.add({b, n, m});
  REQUIRE(sm.ok());
  REQUIRE(sa.ok());
  REQUIRE(mu.step(*sm, view(w, b, n, m), cview(g, b, n, m), 0.01f).ok());
  REQUIRE(aw.step(*sa, view(w, b, n, m), cview(g, b, n, m), 0.01f).ok());
  status s1, s2;
  const auto count = dsv4::test::allocations_during([&] {
    s1 = mu.step(*sm, view(w, b, n, m), cview(g, b, n, m), 0.01f);
    s2 = aw.step(*sa, view(w, b, n, m), cview(g, b, n, m), 0.01f);
  });
  CHECK(s1.ok());
  CHECK(s2.ok());
  CHECK(count == 0);
}
