// Batched HC_pre: a block of tokens shares one pass over hc_fn, split into row groups and token
// blocks (hyper_connection.hpp), and must still give, bit for bit, what each token gives alone, for
// any thread count and both numerics. The shapes cross every blocking edge: 37 tokens (a block of
// 32 plus a remainder, an odd pair), widths that are not multiples of 8 (the lane tail), more mixing
// rows than one group holds (n_hc = 16: 288 rows), and a width past one 512-column chunk.
#include <catch2/catch.hpp>

#include <vector>

#include "dsv4/core/parallel.hpp"
#include "mhc_test_util.hpp"

using namespace dsv4;
using namespace dsv4::mhc;
using mhc_test::site_buffers;

namespace {

struct site_result {
  std::vector<float> x_in, pre, post, comb;
  bool operator==(const site_result&) const = default;
};

site_result run_site(site_buffers& b, numerics num) {
  auto p = b.pre_params();
  p.num = num;
  REQUIRE(run<cpu>(p).ok());
  return {b.x_in, b.pre, b.post, b.comb};
}

// Token t of b alone: same weights, one token.
site_buffers single(const site_buffers& b, index_t t) {
  site_buffers one = b;
  one.tokens = 1;
  one.x.assign(b.x.begin() + t * b.n * b.d, b.x.begin() + (t + 1) * b.n * b.d);
  one.x_in.resize(static_cast<std::size_t>(b.d));
  one.pre.resize(static_cast<std::size_t>(b.n));
  one.post.resize(static_cast<std::size_t>(b.n));
  one.comb.resize(static_cast<std::size_t>(b.n * b.n));
  return one;
}

template <class T>
std::vector<T> part(const std::vector<T>& v, index_t t, index_t per_token) {
  return std::vector<T>(v.begin() + t * per_token, v.begin() + (t + 1) * per_token);
}

}  // namespace

TEST_CASE("Batched HC_pre equals its tokens one at a time, bit for bit, for 1 and 2 threads",
          "[mhc][batched]") {
  struct shape {
    index_t tokens, n, d;
  };
  const int threads = max_threads();
  for (const shape sh : {shape{37, 4, 37}, shape{5, 4, 300}, shape{3, 16, 5}, shape{33, 3, 11}}) {
    for (const numerics num : {numerics::exact, numerics::released}) {
      INFO("tokens " << sh.tokens << ", n_hc " << sh.n << ", d " << sh.d << ", released "
                     << (num == numerics::released));
      site_buffers b(sh.tokens, sh.n, sh.d, 200 + static_cast<unsigned>(sh.d), 2.0f);
      if (num == numerics::released) to_activation(num, b.x);  // BF16 streams
      set_num_threads(2);
      const site_result batch = run_site(b, num);
      set_num_threads(1);
      CHECK(run_site(b, num) == batch);
      for (index_t t = 0; t < sh.tokens; ++t) {
        site_buffers one = single(b, t);
        const site_result r = run_site(one, num);
        CHECK(r.x_in == part(batch.x_in, t, sh.d));
        CHECK(r.pre == part(batch.pre, t, sh.n));
        CHECK(r.post == part(batch.post, t, sh.n));
        CHECK(r.comb == part(batch.comb, t, sh.n * sh.n));
      }
      set_num_threads(threads);
    }
  }
}
