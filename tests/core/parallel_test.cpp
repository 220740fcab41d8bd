// parallel_for and the executors: every index exactly once, bit-identical results for the default
// pool with 1 and 2 threads, spin_pool with 1, 2 and 3 threads and an executor that runs tasks last
// first on one thread; nested loops inline; the executor scope; the default pool's thread count,
// its use from several threads, and loops that still run when it cannot be made; spin_pool's
// sleep, wake-up and shutdown.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "allocations.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/sgemm.hpp"
#include "moe/random_weights.hpp"

namespace {
using dsv4::index_t;

// A row-wise reduction with float rounding: order-sensitive, so a change in how rows are split
// or summed would show in the bits.
std::vector<float> row_sums(const std::vector<float>& x, std::int64_t rows, std::int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows));
  dsv4::parallel_for(0, rows, [&](std::int64_t r) {
    float acc = 0.0f;
    for (std::int64_t c = 0; c < cols; ++c) acc += std::sin(x[static_cast<size_t>(r * cols + c)]) * 1.0001f;
    out[static_cast<size_t>(r)] = acc;
  });
  return out;
}

// The adversarial executor: claims four threads (so loops are split as for four) and runs every
// task on the calling thread, last first. A loop whose tasks wait for one another in index order,
// or whose result depends on the order, fails or hangs here.
struct reversed_executor {
  int threads() const noexcept { return 4; }
  void run(std::int64_t n, dsv4::task_ref f) noexcept {
    ++runs;
    for (std::int64_t i = n - 1; i >= 0; --i) f(i);
  }
  int runs = 0;
};

// Counts the regions an executor is given.
template <class E>
struct counted {
  E& inner;
  std::atomic<int> runs{0};
  int threads() const noexcept { return inner.threads(); }
  void run(std::int64_t n, dsv4::task_ref f) noexcept {
    runs.fetch_add(1, std::memory_order_relaxed);
    inner.run(n, f);
  }
};

struct no_run {
  int threads() const noexcept { return 2; }
};
struct throwing_run {
  int threads() const noexcept { return 2; }
  void run(std::int64_t, dsv4::task_ref) {}
};
static_assert(dsv4::executor<dsv4::spin_pool> && dsv4::executor<reversed_executor> &&
              dsv4::executor<counted<dsv4::spin_pool>>);
static_assert(!dsv4::executor<no_run> && !dsv4::executor<throwing_run>);
static_assert(std::is_nothrow_constructible_v<dsv4::spin_pool, int> &&
              std::is_nothrow_destructible_v<dsv4::spin_pool>);

// The ways a loop can run: no executor installed (the default pool) with 1 and 2 threads,
// spin_pool with 1, 2 and 3 threads, the reversed executor.
constexpr int n_setups = 6;
const char* const setup_names[n_setups] = {"default, 1 thread", "default, 2 threads", "spin_pool(1)",
                                           "spin_pool(2)",      "spin_pool(3)",       "reversed"};

// Runs f() under setup s; returns how many regions its executor was given (-1 for the default).
template <class F>
int under(int s, F&& f) {
  if (s < 2) {
    const int saved = dsv4::max_threads();
    dsv4::set_num_threads(s + 1);
    f();
    dsv4::set_num_threads(saved);
    return -1;
  }
  if (s < 5) {
    dsv4::spin_pool pool(s - 1);
    counted<dsv4::spin_pool> c{pool};
    const dsv4::executor_scope scope(c);
    f();
    return c.runs.load();
  }
  reversed_executor r;
  const dsv4::executor_scope scope(r);
  f();
  return r.runs;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
}  // namespace

TEST_CASE("parallel_for visits every index once", "[core][parallel]") {
  std::vector<int> hits(1000, 0);
  dsv4::parallel_for(0, 1000, [&](std::int64_t i) { hits[static_cast<size_t>(i)] += 1; });
  for (int h : hits) REQUIRE(h == 1);
  int calls = 0;
  dsv4::parallel_for(5, 5, [&](std::int64_t) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("parallel_for results do not depend on the thread count", "[core][parallel]") {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  const std::int64_t rows = 257, cols = 999;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (float& v : x) v = dist(rng);

  const int saved = dsv4::max_threads();
  dsv4::set_num_threads(1);
  const auto one = row_sums(x, rows, cols);
  dsv4::set_num_threads(2);
  const auto two = row_sums(x, rows, cols);
  dsv4::set_num_threads(saved);
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i)
    REQUIRE(std::bit_cast<std::uint32_t>(one[i]) == std::bit_cast<std::uint32_t>(two[i]));
}

TEST_CASE("parallel: the test allocation counter sees operator new on every thread") {
  // The counter the zero-allocation tests rely on (tests/allocations.hpp) must count, or their
  // zeros would mean nothing.
  dsv4::parallel_for(0, 4, [](std::int64_t) {});  // the default pool, made once, is not counted below
  const std::int64_t n = dsv4::test::allocations_during([] {
    dsv4::parallel_for(0, 4, [](std::int64_t i) {
      int* volatile p = new int(static_cast<int>(i));  // volatile: the pair may not be elided
      delete p;
    });
  });
  CHECK(n == 4);
}

TEST_CASE("every executor visits every index once, static, dynamic and work-gated", "[core][parallel]") {
  for (int s = 0; s < n_setups; ++s) {
    for (const std::int64_t n : {0, 1, 2, 3, 5, 64, 1001}) {
      CAPTURE(setup_names[s], n);
      const std::int64_t begin = 7, end = begin + n;
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(3 * n));
      std::vector<std::int64_t> order;  // the dynamic loop's indices, as the reversed executor runs them
      std::mutex order_lock;
      const int runs = under(s, [&] {
        dsv4::parallel_for(begin, end, [&](std::int64_t i) { hits[std::size_t(i - begin)].fetch_add(1); });
        dsv4::parallel_for_dynamic(begin, end, [&](std::int64_t i) {
          hits[std::size_t(n + i - begin)].fetch_add(1);
          const std::lock_guard lock(order_lock);
          order.push_back(i);
        });
        dsv4::parallel_for_work(1 << 20, begin, end,
                                [&](std::int64_t i) { hits[std::size_t(2 * n + i - begin)].fetch_add(1); });
      });
      std::int64_t wrong = 0;
      for (const auto& h : hits) wrong += h.load() != 1;
      CHECK(wrong == 0);
      // The executor really ran the loops (a single index, or one thread, runs in place).
      if (s >= 3) CHECK(runs == (n > 1 ? 3 : 0));
      if (s == 2) CHECK(runs == 0);
      if (s == 5 && n > 1) CHECK(order.front() == end - 1);
    }
  }
}

TEST_CASE("fp8 GEMM and sgemm give the same bits under every executor", "[core][parallel]") {
  const index_t n = 5, out = 300, in = 512;  // 25 tasks of 12 output rows
  const dsv4::test::random_matrix<dsv4::test::format::fp8> w(out, in, 71, 0.05f);
  const auto x = dsv4::test::random_normal(static_cast<std::size_t>(n * in), 72);
  // 150 x 300 x 200: past sgemm's threshold for threads; its row blocks follow max_threads().
  const index_t m = 150, sn = 300, k = 200;
  const auto a = dsv4::test::random_normal(static_cast<std::size_t>(m * k), 73);
  const auto b = dsv4::test::random_normal(static_cast<std::size_t>(k * sn), 74);
  std::vector<float> ws(static_cast<std::size_t>(dsv4::sgemm_op::workspace_size(m, sn, k)));
  std::vector<std::vector<float>> y(n_setups), c(n_setups);
  for (int s = 0; s < n_setups; ++s) {
    y[std::size_t(s)].assign(static_cast<std::size_t>(n * out), 0.0f);
    c[std::size_t(s)].assign(static_cast<std::size_t>(m * sn), 0.0f);
    bool ok = false;
    under(s, [&] {
      ok = dsv4::linear(w.view(), {x.data(), {n, in}}, {y[std::size_t(s)].data(), {n, out}}).ok();
      const dsv4::sgemm_op::params p{
          {a.data(), {m, k}}, {b.data(), {k, sn}}, {c[std::size_t(s)].data(), {m, sn}}, ws};
      ok = ok && dsv4::run<dsv4::cpu>(p).ok();
    });
    REQUIRE(ok);
  }
  for (int s = 1; s < n_setups; ++s) {
    CAPTURE(setup_names[s]);
    CHECK(same_bits(y[0], y[std::size_t(s)]));
    CHECK(same_bits(c[0], c[std::size_t(s)]));
  }
}

TEST_CASE("a loop inside a task runs inline on the task's thread", "[core][parallel]") {
  for (int s = 1; s < n_setups; ++s) {
    CAPTURE(setup_names[s]);
    std::atomic<int> off_thread{0}, wide{0}, inner{0};
    const int runs = under(s, [&] {
      dsv4::parallel_for(0, 6, [&](std::int64_t) {
        const auto me = std::this_thread::get_id();
        if (dsv4::max_threads() != 1) wide.fetch_add(1);
        dsv4::parallel_for_dynamic(0, 50, [&](std::int64_t) {
          inner.fetch_add(1);
          if (std::this_thread::get_id() != me) off_thread.fetch_add(1);
        });
      });
    });
    CHECK(inner.load() == 300);
    CHECK(off_thread.load() == 0);
    CHECK(wide.load() == 0);
    if (s >= 3) CHECK(runs == 1);  // the outer loop only
  }
}

TEST_CASE("the default pool: set_num_threads sizes it for every thread; its loops use its threads",
          "[core][parallel]") {
  static_assert(noexcept(dsv4::set_num_threads(2)));
  static_assert(noexcept(dsv4::max_threads()));
  const int saved = dsv4::max_threads();
  dsv4::set_num_threads(3);
  CHECK(dsv4::max_threads() == 3);
  int elsewhere = 0;
  std::thread([&] { elsewhere = dsv4::max_threads(); }).join();
  CHECK(elsewhere == 3);
  dsv4::set_num_threads(0);
  CHECK(dsv4::max_threads() == 1);
  // Two threads: the pool's worker joins a loop whose tasks take long enough.
  dsv4::set_num_threads(2);
  std::vector<std::thread::id> ids(64);
  dsv4::parallel_for_dynamic(0, 64, [&](std::int64_t i) {
    ids[std::size_t(i)] = std::this_thread::get_id();
    std::this_thread::sleep_for(std::chrono::microseconds{200});
  });
  const auto me = std::this_thread::get_id();
  CHECK(std::any_of(ids.begin(), ids.end(), [&](const std::thread::id& id) { return id != me; }));
  dsv4::set_num_threads(saved);
}

TEST_CASE("the default pool: callers on several threads, and its count changed while they run",
          "[core][parallel]") {
  const int saved = dsv4::max_threads();
  dsv4::set_num_threads(2);
  constexpr int callers = 3, loops = 200, width = 37;
  std::vector<std::atomic<int>> hits(std::size_t(callers * loops * width));
  std::atomic<int> done{0};
  const auto caller = [&](int who) {
    for (int r = 0; r < loops; ++r) {
      const auto at = [&](std::int64_t i) { return std::size_t((who * loops + r) * width + i); };
      if (r % 2 == 0)
        dsv4::parallel_for(0, width, [&](std::int64_t i) { hits[at(i)].fetch_add(1); });
      else
        dsv4::parallel_for_dynamic(0, width, [&](std::int64_t i) { hits[at(i)].fetch_add(1); });
    }
    done.fetch_add(1);
  };
  // The pool is replaced under the callers' loops: a loop in flight finishes on its pool.
  std::thread changer([&] {
    int k = 0;
    do {
      dsv4::set_num_threads(2 + ++k % 2);
      std::this_thread::yield();
    } while (done.load() < callers);
  });
  std::vector<std::thread> others;
  for (int who = 1; who < callers; ++who) others.emplace_back(caller, who);
  caller(0);
  for (std::thread& t : others) t.join();
  changer.join();
  std::int64_t wrong = 0;
  for (const auto& h : hits) wrong += h.load() != 1;
  CHECK(wrong == 0);
  dsv4::set_num_threads(saved);
}

TEST_CASE("the default pool: no exception leaves a loop; a pool that cannot be made leaves it inline",
          "[core][parallel]") {
  const int saved = dsv4::max_threads();
  // A task that throws and catches inside itself: every index still runs, and the pool goes on.
  dsv4::set_num_threads(2);
  std::vector<std::atomic<int>> hits(100);
  std::atomic<int> caught{0};
  dsv4::parallel_for_dynamic(0, 100, [&](std::int64_t i) {
    try {
      if (i % 7 == 0) throw std::runtime_error("task");
    } catch (const std::runtime_error&) {
      caught.fetch_add(1);
    }
    hits[std::size_t(i)].fetch_add(1);
  });
  CHECK(caught.load() == 15);
  // No memory for the pool: the loops run, on the calling thread, and nothing is thrown.
  dsv4::set_num_threads(3);  // the pool of 2 is dropped; the next loop would make one of 3
  const auto me = std::this_thread::get_id();
  std::atomic<int> off_thread{0};
  bool threw = false;
  {
    const dsv4::test::refuse_allocations refuse;
    try {
      dsv4::parallel_for(0, 100, [&](std::int64_t i) {
        hits[std::size_t(i)].fetch_add(1);
        if (std::this_thread::get_id() != me) off_thread.fetch_add(1);
      });
      dsv4::parallel_for_dynamic(0, 100, [&](std::int64_t i) {
        hits[std::size_t(i)].fetch_add(1);
        if (std::this_thread::get_id() != me) off_thread.fetch_add(1);
      });
    } catch (...) {
      threw = true;
    }
  }
  CHECK_FALSE(threw);
  CHECK(off_thread.load() == 0);
  std::int64_t wrong = 0;
  for (const auto& h : hits) wrong += h.load() != 3;
  CHECK(wrong == 0);
  // With memory again, the next loop makes the pool.
  std::atomic<int> sum{0};
  dsv4::parallel_for(0, 100, [&](std::int64_t i) { sum.fetch_add(int(i)); });
  CHECK(sum.load() == 4950);
  dsv4::set_num_threads(saved);
}

TEST_CASE("executor_scope installs for its thread and restores the previous executor", "[core][parallel]") {
  const int default_threads = dsv4::max_threads();
  reversed_executor outer;
  {
    const dsv4::executor_scope a(outer);
    CHECK(dsv4::max_threads() == 4);
    {
      dsv4::spin_pool pool(3);
      counted<dsv4::spin_pool> inner{pool};
      const dsv4::executor_scope b(inner);
      CHECK(dsv4::max_threads() == 3);
      dsv4::parallel_for(0, 10, [](std::int64_t) {});
      CHECK(inner.runs.load() == 1);
      // Another thread has its own (none installed).
      int elsewhere = 0;
      std::thread([&] { elsewhere = dsv4::max_threads(); }).join();
      CHECK(elsewhere == default_threads);
    }
    CHECK(dsv4::max_threads() == 4);
    dsv4::parallel_for(0, 10, [](std::int64_t) {});
    CHECK(outer.runs == 1);
  }
  CHECK(dsv4::max_threads() == default_threads);
  dsv4::parallel_for(0, 10, [](std::int64_t) {});
  CHECK(outer.runs == 1);
}

TEST_CASE("spin_pool: no allocation per region", "[core][parallel]") {
  dsv4::spin_pool pool(2);
  const dsv4::executor_scope scope(pool);
  std::vector<float> out(64);
  dsv4::parallel_for(0, 64, [&](std::int64_t i) { out[std::size_t(i)] = float(i); });  // warm
  const std::int64_t allocated = dsv4::test::allocations_during([&] {
    for (int r = 0; r < 100; ++r) {
      dsv4::parallel_for(0, 64, [&](std::int64_t i) { out[std::size_t(i)] += 1.0f; });
      dsv4::parallel_for_dynamic(0, 64, [&](std::int64_t i) { out[std::size_t(i)] += 1.0f; });
    }
  });
  CHECK(allocated == 0);
  for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == float(i) + 200.0f);
}

TEST_CASE("spin_pool: sleeping workers wake for a region; destroyed idle, asleep or never used",
          "[core][parallel]") {
  { dsv4::spin_pool unused(3); }  // workers may not even have started
  {
    dsv4::spin_pool pool(3, std::chrono::microseconds{50});
    CHECK(pool.threads() == 3);
    std::atomic<int> sum{0};
    pool.run(10, [&](std::int64_t i) { sum.fetch_add(int(i)); });
    CHECK(sum.load() == 45);
    // Past the spin: the workers sleep, and the next region wakes them.
    std::this_thread::sleep_for(std::chrono::milliseconds{30});
    std::vector<std::thread::id> ids(64);
    pool.run(64, [&](std::int64_t i) {
      ids[std::size_t(i)] = std::this_thread::get_id();
      std::this_thread::sleep_for(std::chrono::microseconds{200});  // long enough for every worker to join
    });
    std::vector<std::thread::id> distinct;
    for (const auto& id : ids)
      if (std::find(distinct.begin(), distinct.end(), id) == distinct.end()) distinct.push_back(id);
    CHECK(distinct.size() > 1);
    std::this_thread::sleep_for(std::chrono::milliseconds{30});
  }  // destroyed with its workers asleep
  {
    dsv4::spin_pool pool(2);
    std::atomic<int> count{0};
    pool.run(3, [&](std::int64_t) { count.fetch_add(1); });
    CHECK(count.load() == 3);
  }  // destroyed with its workers spinning
}

TEST_CASE("spin_pool: more threads than cores, and two callers at once", "[core][parallel]") {
  // Six threads on a machine that may have two: the waits yield, so the regions still end.
  dsv4::spin_pool pool(6);
  const dsv4::executor_scope scope(pool);
  std::vector<std::atomic<int>> hits(2 * 300);
  for (int r = 0; r < 300; ++r) {
    dsv4::parallel_for(0, 2, [&](std::int64_t i) { hits[std::size_t(2 * r + i)].fetch_add(1); });
  }
  std::int64_t wrong = 0;
  for (const auto& h : hits) wrong += h.load() != 1;
  CHECK(wrong == 0);
  // Two threads share a pool: while one's region is in flight the other runs its own in place.
  std::vector<std::atomic<int>> shared(2 * 200 * 37);
  const auto caller = [&](int who) {
    const dsv4::executor_scope mine(pool);
    for (int r = 0; r < 200; ++r)
      dsv4::parallel_for_dynamic(
          0, 37, [&](std::int64_t i) { shared[std::size_t((who * 200 + r) * 37 + i)].fetch_add(1); });
  };
  std::thread other(caller, 1);
  caller(0);
  other.join();
  wrong = 0;
  for (const auto& h : shared) wrong += h.load() != 1;
  CHECK(wrong == 0);
}
