// model/fidelity.hpp: KL divergence against closed forms, its sign and zero, -inf logits, NaN for
// bad rows; compare_logits' mean, largest and top-1 against a direct evaluation, and its checks
// (shapes, non-finite logits) with the result left untouched.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "dsv4/model/fidelity.hpp"
#include "random.hpp"

using dsv4::index_t;
using dsv4::model::compare_logits;
using dsv4::model::kl_divergence;
using dsv4::model::logit_agreement;

namespace {
constexpr float inf = std::numeric_limits<float>::infinity();
using view = dsv4::tensor_view<const float, 2>;
}  // namespace

TEST_CASE("fidelity: KL of two-token rows equals the closed form, shift-invariant, zero for equal rows") {
  // p = softmax(0, a) = (1 - s, s) with s = 1 / (1 + e^-a); q likewise with b.
  const auto closed = [](double a, double b) {
    const double s = 1 / (1 + std::exp(-a)), t = 1 / (1 + std::exp(-b));
    return (1 - s) * std::log((1 - s) / (1 - t)) + s * std::log(s / t);
  };
  for (const auto& [a, b] : {std::pair{1.0f, -2.0f}, std::pair{3.5f, 0.25f}, std::pair{-0.5f, 4.0f}}) {
    const std::vector<float> p{0.0f, a}, q{0.0f, b}, q_shifted{7.0f, b + 7.0f};
    CHECK(kl_divergence(p, q) == Approx(closed(a, b)).epsilon(1e-9));
    CHECK(kl_divergence(p, q_shifted) == Approx(closed(a, b)).epsilon(1e-6));
    CHECK(kl_divergence(p, p) == Approx(0.0).margin(1e-15));
  }
}

TEST_CASE("fidelity: KL is positive on random rows and handles -inf as probability zero") {
  const auto p = dsv4::test::random_normal(1000, 3), q = dsv4::test::random_normal(1000, 4);
  CHECK(kl_divergence(p, q) > 0.1);
  std::vector<float> p_ban = p, q_ban = q;
  p_ban[5] = -inf;
  CHECK(std::isfinite(kl_divergence(p_ban, q)));  // p never draws token 5
  q_ban[5] = -inf;
  CHECK(kl_divergence(p, q_ban) == inf);  // q cannot draw what p can
  CHECK(std::isfinite(kl_divergence(p_ban, q_ban)));
}

TEST_CASE("fidelity: KL is NaN for rows of different lengths, empty rows and NaN or +inf logits") {
  const std::vector<float> a{1, 2, 3}, b{1, 2}, nan_row{1, std::nanf(""), 3}, inf_row{1, inf, 3};
  CHECK(std::isnan(kl_divergence(a, b)));
  CHECK(std::isnan(kl_divergence({}, {})));
  CHECK(std::isnan(kl_divergence(a, nan_row)));
  CHECK(std::isnan(kl_divergence(inf_row, a)));
  CHECK(std::isnan(kl_divergence(std::vector<float>{-inf, -inf}, std::vector<float>{0, 0})));
}

TEST_CASE("fidelity: compare_logits gives the mean, the largest and the top-1 agreement of its rows") {
  constexpr index_t rows = 6, vocab = 50;
  const auto p = dsv4::test::random_normal(rows * vocab, 11);
  auto q = p;
  const auto noise = dsv4::test::random_normal(rows * vocab, 12);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] += 0.3f * noise[i];
  // Rows 0 and 3 of q get a new argmax; the others keep p's (checked below).
  for (index_t r : {0, 3}) q[static_cast<std::size_t>(r * vocab + (r + 7))] = 100.0f;
  logit_agreement a;
  REQUIRE(compare_logits(view(p.data(), {rows, vocab}), view(q.data(), {rows, vocab}), a).ok());
  double mean = 0, largest = 0, top1 = 0;
  for (index_t r = 0; r < rows; ++r) {
    const std::span<const float> pr(p.data() + r * vocab, vocab), qr(q.data() + r * vocab, vocab);
    const double kl = kl_divergence(pr, qr);
    mean += kl / rows;
    largest = std::max(largest, kl);
    top1 += (std::max_element(pr.begin(), pr.end()) - pr.begin() ==
             std::max_element(qr.begin(), qr.end()) - qr.begin()) /
            double(rows);
  }
  CHECK(a.mean_kl == Approx(mean).epsilon(1e-12));
  CHECK(a.max_kl == Approx(largest).epsilon(1e-12));
  CHECK(a.top1 == Approx(top1));
  CHECK(a.top1 <= 4.0 / 6 + 1e-12);  // rows 0 and 3 disagree
  CHECK(a.max_kl > a.mean_kl);
}

TEST_CASE("fidelity: compare_logits names a shape mismatch or a bad logit and leaves the result") {
  const std::vector<float> p(20, 0.5f);
  std::vector<float> q(20, 0.25f);
  logit_agreement a{7, 8, 9};
  const auto untouched = [&] { return a.mean_kl == 7 && a.max_kl == 8 && a.top1 == 9; };
  auto s = compare_logits(view(p.data(), {4, 5}), view(q.data(), {5, 4}), a);
  CHECK(s.code() == dsv4::errc::shape_mismatch);
  CHECK(untouched());
  s = compare_logits(view(p.data(), {0, 5}), view(q.data(), {0, 5}), a);
  CHECK(!s.ok());
  CHECK(untouched());
  q[13] = std::nanf("");
  s = compare_logits(view(p.data(), {4, 5}), view(q.data(), {4, 5}), a);
  CHECK(s.code() == dsv4::errc::invalid_argument);
  CHECK_THAT(s.message(), Catch::Contains("q row 2"));
  CHECK(untouched());
}
