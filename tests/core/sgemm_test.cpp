// sgemm_op against a plain triple loop in double precision: every transposition, alpha and beta,
// edge tiles smaller than the register tile, K spanning several cache blocks, strided views;
// views with no unit stride; a symmetric C computed as its upper tiles and mirrored; an addend
// read in C's place by the beta term; bit-identical results for 1 and 2 threads; shape and
// workspace errors. sgemm_direct (the unpacked products) against the same loop: row-major and
// packed B, strided C, accumulation; a row's bits whatever tile height computes it.
// pack_a against its definition, with guards around the block.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "dsv4/core/sgemm.hpp"
#include "random.hpp"

namespace {
using dsv4::index_t;
using transpose = dsv4::sgemm_op::transpose;

std::vector<float> random_matrix(index_t rows, index_t cols, unsigned seed) {
  return dsv4::test::random_normal(static_cast<std::size_t>(rows * cols), seed);
}

// The reference: C = alpha * op(A) op(B) + beta * C with a double accumulator, views given as
// row-major buffers with leading dimensions.
std::vector<double> reference(const dsv4::sgemm_op::params& p) {
  const index_t m = p.c.extent(0), n = p.c.extent(1);
  const index_t k = p.trans_a == transpose::no ? p.a.extent(1) : p.a.extent(0);
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double acc = 0;
      for (index_t q = 0; q < k; ++q) {
        const double x = p.trans_a == transpose::no ? p.a(i, q) : p.a(q, i);
        const double y = p.trans_b == transpose::no ? p.b(q, j) : p.b(j, q);
        acc += x * y;
      }
      out[static_cast<std::size_t>(i * n + j)] = double(p.alpha) * acc + double(p.beta) * p.c(i, j);
    }
  return out;
}

// Relative L2 error of C against the reference.
double rel_error(const dsv4::tensor_view<float, 2>& c, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (index_t i = 0; i < c.extent(0); ++i)
    for (index_t j = 0; j < c.extent(1); ++j) {
      const double r = ref[static_cast<std::size_t>(i * c.extent(1) + j)];
      num += (c(i, j) - r) * (c(i, j) - r);
      den += r * r;
    }
  return std::sqrt(num / den);
}

struct problem {
  index_t m, n, k;
  transpose ta, tb;
  float alpha, beta;
};

// Runs one product and returns its relative error. A and B are stored with padded leading
// dimensions so that the views are strided, not contiguous.
double run_case(const problem& pr, unsigned seed) {
  const index_t ar = pr.ta == transpose::no ? pr.m : pr.k, ac = pr.ta == transpose::no ? pr.k : pr.m;
  const index_t br = pr.tb == transpose::no ? pr.k : pr.n, bc = pr.tb == transpose::no ? pr.n : pr.k;
  const auto a = random_matrix(ar, ac + 3, seed);
  const auto b = random_matrix(br, bc + 5, seed + 1);
  auto c = random_matrix(pr.m, pr.n, seed + 2);
  std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(pr.m, pr.n, pr.k)));
  const dsv4::sgemm_op::params p{{a.data(), {ar, ac}, {ac + 3, 1}},
                                 {b.data(), {br, bc}, {bc + 5, 1}},
                                 {c.data(), {pr.m, pr.n}},
                                 ws,
                                 pr.alpha,
                                 pr.beta,
                                 pr.ta,
                                 pr.tb};
  const auto ref = reference(p);
  REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
  return rel_error(p.c, ref);
}
}  // namespace

TEST_CASE("sgemm matches a double-precision triple loop", "[core][sgemm]") {
  // fp32 accumulation over k terms: the error grows like sqrt(k) * 2^-24 for random data.
  const problem cases[] = {
      {1, 1, 1, transpose::no, transpose::no, 1.0f, 0.0f},
      {5, 7, 3, transpose::no, transpose::no, 1.0f, 0.0f},
      {37, 53, 300, transpose::no, transpose::no, 0.5f, 0.0f},
      {150, 40, 513, transpose::yes, transpose::no, -1.25f, 0.75f},
      {64, 200, 97, transpose::no, transpose::yes, 2.0f, -1.0f},
      {145, 161, 257, transpose::yes, transpose::yes, 1.0f, 1.0f},
      {300, 3100, 20, transpose::no, transpose::no, 1.0f, 0.5f},  // two NC panels
  };
  unsigned seed = 10;
  for (const auto& pr : cases) {
    INFO("m " << pr.m << " n " << pr.n << " k " << pr.k);
    CHECK(run_case(pr, seed += 3) < 2e-6);
  }
}

TEST_CASE("sgemm with beta 0 ignores NaN in C and k 0 scales C", "[core][sgemm]") {
  const auto a = random_matrix(9, 11, 1), b = random_matrix(11, 17, 2);
  std::vector<float> c(9 * 17, NAN), ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(9, 17, 11)));
  dsv4::sgemm_op::params p{{a.data(), {9, 11}}, {b.data(), {11, 17}}, {c.data(), {9, 17}}, ws};
  REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
  const auto ref = reference(p);
  CHECK(rel_error(p.c, ref) < 1e-6);

  auto c2 = random_matrix(4, 6, 3);
  const auto c2_before = c2;
  const dsv4::sgemm_op::params empty{
      {a.data(), {4, 0}}, {b.data(), {0, 6}}, {c2.data(), {4, 6}}, ws, 1.0f, -2.0f};
  REQUIRE(dsv4::run<dsv4::cpu>(empty).ok());
  for (std::size_t i = 0; i < c2.size(); ++i) CHECK(c2[i] == -2.0f * c2_before[i]);
}

TEST_CASE("sgemm results do not depend on the thread count", "[core][sgemm]") {
  const index_t m = 333, n = 517, k = 700;
  const auto a = random_matrix(m, k, 4), b = random_matrix(n, k, 5);
  std::vector<float> c1(static_cast<std::size_t>(m * n)), c2(c1.size());
  std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(m, n, k)));
  const int threads = dsv4::max_threads();
  for (int t : {1, 2}) {
    dsv4::set_num_threads(t);
    const dsv4::sgemm_op::params p{
        {a.data(), {m, k}}, {b.data(), {n, k}}, {(t == 1 ? c1 : c2).data(), {m, n}}, ws, 1.0f, 0.0f,
        transpose::no,      transpose::yes};
    REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
  }
  dsv4::set_num_threads(threads);
  CHECK(c1 == c2);
}

TEST_CASE("sgemm with neither stride 1 packs through the generic path", "[core][sgemm]") {
  // A (40, 70) and B (70, 50) read every other element of their buffers along both dimensions.
  const index_t m = 40, n = 50, k = 70;
  const auto a = random_matrix(2 * m, 2 * k, 21), b = random_matrix(2 * k, 2 * n, 22);
  auto c = random_matrix(m, n, 23);
  std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(m, n, k)));
  for (const auto tb : {transpose::no, transpose::yes}) {
    const dsv4::tensor_view<const float, 2> bv =
        tb == transpose::no ? dsv4::tensor_view<const float, 2>(b.data(), {k, n}, {4 * n, 2})
                            : dsv4::tensor_view<const float, 2>(b.data(), {n, k}, {2, 4 * n});
    const dsv4::sgemm_op::params p{
        {a.data(), {m, k}, {4 * k, 2}}, bv, {c.data(), {m, n}}, ws, 0.5f, 1.5f, transpose::no, tb};
    const auto ref = reference(p);
    REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
    CHECK(rel_error(p.c, ref) < 2e-6);
  }
}

TEST_CASE("sgemm with a symmetric C computes the upper tiles and mirrors them", "[core][sgemm]") {
  // Gram matrices X X^T and X^T X and the square of a symmetric matrix with a symmetric beta C,
  // at sizes with edge tiles and several row blocks, against the plain product; the result is
  // exactly symmetric and does not depend on the thread count.
  for (const index_t s : {1, 7, 100, 333}) {
    const index_t l = 2 * s + 3;
    INFO("s " << s);
    const auto x = random_matrix(s, l, 30);
    auto sym = random_matrix(s, s, 31);
    for (index_t i = 0; i < s; ++i)
      for (index_t j = 0; j < i; ++j) sym[i * s + j] = sym[j * s + i];
    std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(s, s, l)));
    const dsv4::tensor_view<const float, 2> xv(x.data(), {s, l}), xtv(x.data(), {l, s}),
        sv(sym.data(), {s, s});
    struct product {
      dsv4::tensor_view<const float, 2> a, b;
      transpose ta, tb;
      float alpha, beta;
    };
    for (const product& pr : {product{xv, xv, transpose::no, transpose::yes, 1.0f, 0.0f},
                              product{xtv, xtv, transpose::yes, transpose::no, 1.0f, 0.0f},
                              product{sv, sv, transpose::no, transpose::no, 2.0315f, -4.775f}}) {
      std::vector<float> c1 = sym, c2 = sym;
      const int threads = dsv4::max_threads();
      for (int t : {1, 2}) {
        dsv4::set_num_threads(t);
        const dsv4::sgemm_op::params p{
            pr.a, pr.b, {(t == 1 ? c1 : c2).data(), {s, s}}, ws, pr.alpha, pr.beta, pr.ta, pr.tb, true};
        const auto ref = reference(p);
        REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
        CHECK(rel_error(p.c, ref) < 2e-6);
      }
      dsv4::set_num_threads(threads);
      CHECK(c1 == c2);
      bool symmetric = true;
      for (index_t i = 0; i < s; ++i)
        for (index_t j = 0; j < i; ++j) symmetric = symmetric && c1[i * s + j] == c1[j * s + i];
      CHECK(symmetric);
    }
  }
}

// With an addend D the beta term reads D instead of C: the same bits as copying D into C first,
// with C's old contents (NaN here) never read; plain and symmetric, edge tiles and several KC
// blocks, D an operand of the product itself (Newton-Schulz's b A + c A A) or a matrix of its own.
TEST_CASE("sgemm with an addend equals copying it into C first", "[core][sgemm]") {
  for (const index_t s : {7, 100, 401}) {
    INFO("s " << s);
    auto sym = random_matrix(s, s, 40);
    for (index_t i = 0; i < s; ++i)
      for (index_t j = 0; j < i; ++j) sym[i * s + j] = sym[j * s + i];
    const auto other = random_matrix(s, s, 41);
    std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(s, s, s)));
    const dsv4::tensor_view<const float, 2> sv(sym.data(), {s, s}), ov(other.data(), {s, s});
    for (const bool symmetric : {false, true})
      for (const auto& d : {sv, ov}) {
        if (symmetric && d.data() != sym.data()) continue;  // a symmetric C needs a symmetric D
        std::vector<float> copied(d.data(), d.data() + s * s), direct(static_cast<std::size_t>(s * s), NAN);
        dsv4::sgemm_op::params p{
            sv, d, {copied.data(), {s, s}}, ws, 2.0315f, -4.775f, transpose::no, transpose::no, symmetric};
        REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
        p.c = {direct.data(), {s, s}};
        p.addend = d;
        REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
        CHECK(direct == copied);
      }
  }
}

// Packing stores whole vectors whose two extra floats land where later writes go: it must still
// write exactly its block (rows padded to whole slivers with zeros) and nothing around it, for
// both layouts of op(A), partial slivers and depths on either side of a multiple of 8.
TEST_CASE("pack_a writes exactly its slivers and nothing past them", "[core][sgemm]") {
  namespace sg = dsv4::detail::sgemm;
  constexpr index_t mr = dsv4::sgemm_op::mr, guard = 16;
  constexpr float untouched = -7.0f;
  const auto a = random_matrix(140, 400, 31);
  for (const bool transposed : {false, true})
    for (const index_t rows : {1, 5, 6, 7, 12, 13, 128, 133})
      for (const index_t depth : {1, 7, 8, 9, 16, 383, 384}) {
        CAPTURE(transposed, rows, depth);
        // op(A) (rows + 3, depth + 5) viewed over the same buffer either way.
        const index_t m = rows + 3, k = depth + 5;
        const sg::strided op_a = transposed ? sg::strided{a.data(), 1, m} : sg::strided{a.data(), k, 1};
        const index_t size = (rows + mr - 1) / mr * mr * depth;
        std::vector<float> out(static_cast<std::size_t>(size + 2 * guard), untouched);
        sg::pack_a(op_a, 2, rows, 3, depth, 0.5f, out.data() + guard);
        index_t wrong = 0, outside = 0;
        for (index_t i = 0; i < guard; ++i) {
          outside += out[static_cast<std::size_t>(i)] != untouched;
          outside += out[static_cast<std::size_t>(guard + size + i)] != untouched;
        }
        for (index_t s = 0; s < size / (mr * depth); ++s)
          for (index_t p = 0; p < depth; ++p)
            for (index_t r = 0; r < mr; ++r) {
              const index_t i = s * mr + r;
              const float want = i < rows ? 0.5f * op_a.at(2 + i, 3 + p) : 0.0f;
              wrong += out[static_cast<std::size_t>(guard + s * mr * depth + p * mr + r)] != want;
            }
        CHECK(wrong == 0);
        CHECK(outside == 0);
      }
}

TEST_CASE("sgemm rejects mismatched shapes and a short workspace and aliasing", "[core][sgemm]") {
  auto a = random_matrix(8, 8, 6);
  std::vector<float> c(64), ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(8, 8, 8)));
  dsv4::sgemm_op::params p{{a.data(), {8, 8}}, {a.data(), {8, 8}}, {c.data(), {8, 8}}, ws};
  CHECK(dsv4::run<dsv4::cpu>(p).ok());

  auto bad = p;
  bad.b = {a.data(), {7, 8}};
  CHECK(dsv4::run<dsv4::cpu>(bad).code() == dsv4::errc::shape_mismatch);
  bad = p;
  bad.c = {c.data(), {8, 7}};
  CHECK(dsv4::run<dsv4::cpu>(bad).message().find("gemm b") != std::string::npos);
  bad = p;
  bad.workspace = std::span<float>(ws).first(ws.size() - 1);
  CHECK(dsv4::run<dsv4::cpu>(bad).message().find("workspace") != std::string::npos);
  bad = p;
  bad.c = {a.data(), {8, 8}};
  CHECK(dsv4::run<dsv4::cpu>(bad).message().find("overlaps") != std::string::npos);
  const auto wide = random_matrix(8, 9, 7);
  std::vector<float> c9(72);
  dsv4::sgemm_op::params rect{{a.data(), {8, 8}}, {wide.data(), {8, 9}}, {c9.data(), {8, 9}}, ws};
  CHECK(dsv4::run<dsv4::cpu>(rect).ok());
  rect.symmetric = true;
  CHECK(dsv4::run<dsv4::cpu>(rect).message().find("symmetric") != std::string::npos);

  // The addend: C's shape and strides, and no part of C (C itself is the plain beta term).
  std::vector<float> d(80);
  bad = p;
  bad.addend = {d.data(), {8, 8}};
  CHECK(dsv4::run<dsv4::cpu>(bad).ok());
  bad.addend = {c.data(), {8, 8}};
  CHECK(dsv4::run<dsv4::cpu>(bad).ok());
  bad.addend = {d.data(), {8, 7}};
  CHECK(dsv4::run<dsv4::cpu>(bad).message().find("addend") != std::string::npos);
  bad.addend = {d.data(), {8, 8}, {9, 1}};
  CHECK(dsv4::run<dsv4::cpu>(bad).message().find("addend") != std::string::npos);
  bad.addend = {c.data() + 1, {8, 8}, {8, 1}};
  CHECK(dsv4::run<dsv4::cpu>(bad).message().find("addend: overlaps") != std::string::npos);
}

TEST_CASE("sgemm_direct matches the triple loop with row-major or packed B", "[core][sgemm]") {
  using dsv4::sgemm_direct_params;
  constexpr index_t nr = dsv4::sgemm_op::nr;
  struct shape {
    index_t m, n, k;
  };
  // Edge tiles in m and n, K across two KC blocks, a single row and column.
  const shape cases[] = {{1, 1, 1}, {5, 17, 3}, {13, 64, 300}, {64, 40, 128}, {7, 33, 513}, {14, 20, 50}};
  unsigned seed = 70;
  for (const auto& [m, n, k] : cases) {
    INFO("m " << m << " n " << n << " k " << k);
    const index_t lda = k + 3, ldb = dsv4::round_up(n, nr) + 5;
    const auto a = random_matrix(m, lda, seed += 3);
    const auto b = random_matrix(k, ldb, seed + 1);  // row-major (k, n), readable to a multiple of NR
    const auto c0 = random_matrix(m, n, seed + 2);
    // The reference with beta 1 (accumulate) over unit alpha; the plain product is ref - c0.
    const dsv4::sgemm_op::params ref_p{{a.data(), {m, k}, {lda, 1}},
                                       {b.data(), {k, n}, {ldb, 1}},
                                       {const_cast<float*>(c0.data()), {m, n}},
                                       {},
                                       1.0f,
                                       1.0f};
    const auto acc_ref = reference(ref_p);
    std::vector<double> plain_ref(acc_ref);
    for (std::size_t i = 0; i < plain_ref.size(); ++i) plain_ref[i] -= c0[i];
    // B packed as slivers of the transposed view of its transpose: the same numbers.
    std::vector<float> packed(static_cast<std::size_t>(dsv4::sliver_floats(k, n)));
    dsv4::pack_slivers(dsv4::tensor_view<const float, 2>(b.data(), {k, n}, {ldb, 1}), packed.data());

    // C = A B into a row-major C, B read in place.
    std::vector<float> c(static_cast<std::size_t>(m * n), std::nanf(""));
    const sgemm_direct_params plain{.a = a.data(),
                                    .lda = lda,
                                    .b = b.data(),
                                    .ldb = ldb,
                                    .sliver_stride = nr,
                                    .c = c.data(),
                                    .ldc = n,
                                    .m = m,
                                    .n = n,
                                    .k = k};
    dsv4::sgemm_direct(plain);
    CHECK(rel_error({c.data(), {m, n}}, plain_ref) < 2e-6);

    // C += A B into a transposed C (column stride m), B packed.
    std::vector<float> ct(static_cast<std::size_t>(m * n));
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j)
        ct[static_cast<std::size_t>(j * m + i)] = c0[static_cast<std::size_t>(i * n + j)];
    const sgemm_direct_params accumulate{.a = a.data(),
                                         .lda = lda,
                                         .b = packed.data(),
                                         .sliver_stride = k * nr,
                                         .c = ct.data(),
                                         .ldc = 1,
                                         .c_col_stride = m,
                                         .m = m,
                                         .n = n,
                                         .k = k,
                                         .accumulate = true};
    dsv4::sgemm_direct(accumulate);
    CHECK(rel_error({ct.data(), {m, n}, {1, m}}, acc_ref) < 2e-6);

    // The same product in passes of any length over k: all of k at once, or 7 steps at a time.
    for (const index_t k_block : {k, index_t{7}}) {
      auto passes = accumulate;
      passes.k_block = k_block;
      passes.accumulate = false;
      std::fill(ct.begin(), ct.end(), std::nanf(""));
      dsv4::sgemm_direct(passes);
      INFO("k_block " << k_block);
      CHECK(rel_error({ct.data(), {m, n}, {1, m}}, plain_ref) < 2e-6);
    }
  }
}

TEST_CASE("a row of C has the same bits whatever tile height computes it", "[core][sgemm]") {
  // 12 rows run as two 6-row tiles; 10 as 6 + 4 (both products); 8 as 4 + 4 (sgemm_direct) and as
  // 6 + 2, the 2 computed by a 4-row tile (sgemm).
  constexpr index_t nr = dsv4::sgemm_op::nr;
  const index_t n = 2 * nr, k = 450;  // K over two KC blocks
  const auto a = random_matrix(12, k, 90), b = random_matrix(k, n, 91);
  const auto direct = [&](index_t m) {
    std::vector<float> c(static_cast<std::size_t>(m * n));
    dsv4::sgemm_direct({.a = a.data(),
                        .lda = k,
                        .b = b.data(),
                        .ldb = n,
                        .sliver_stride = nr,
                        .c = c.data(),
                        .ldc = n,
                        .m = m,
                        .n = n,
                        .k = k});
    return c;
  };
  const auto packed = [&](index_t m) {
    std::vector<float> c(static_cast<std::size_t>(m * n));
    std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(m, n, k)));
    const dsv4::sgemm_op::params p{
        {a.data(), {m, k}}, {b.data(), {k, n}}, {c.data(), {m, n}}, ws, 1.0f, 0.0f};
    REQUIRE(dsv4::run<dsv4::cpu>(p).ok());
    return c;
  };
  const auto prefix_equal = [&](const std::vector<float>& whole, const std::vector<float>& part) {
    return std::equal(part.begin(), part.end(), whole.begin());
  };
  const auto d12 = direct(12), p12 = packed(12);
  CHECK(prefix_equal(d12, direct(8)));
  CHECK(prefix_equal(d12, direct(10)));
  CHECK(prefix_equal(p12, packed(10)));
  CHECK(prefix_equal(p12, packed(8)));
}
