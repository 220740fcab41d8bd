// What one parallel region costs: starting the thread team, handing out the tasks and joining.
// bm_region_empty runs a region of 2 tasks that do nothing; bm_region_tiny one of 64 tasks of a
// few multiply-adds each (one index at a time, as parallel_for_dynamic hands them out);
// bm_region_split one of 2 tasks of a few microseconds, which the threads do share. Each runs
// on every hardware thread, on parallel_for's default pool (<bm>/default: no executor installed),
// on a spin_pool the caller installs (<bm>/spin_pool), and, for reference where the benchmark is
// built with OpenMP, as an OpenMP region of the same loop (<bm>/openmp: its threads wait between
// regions as OMP_WAIT_POLICY in the environment says; the pools' idle threads spin, then sleep,
// whatever that variable says). The time per iteration is the region's wall time; `off_caller`
// is the fraction of tasks that ran on a thread other than the caller (a region whose tasks all
// ran on the caller did not wait for the team).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "dsv4/core/parallel.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

enum class team { default_pool, spin_pool, openmp };

int hardware_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// Tasks run off the calling thread (only those touch the counter, so that counting adds no
// cache-line transfer to a region whose tasks all ran on the caller).
struct task_count {
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<std::int64_t> off{0};
  std::int64_t per_region = 0;
  void add() {
    if (std::this_thread::get_id() != caller) off.fetch_add(1, std::memory_order_relaxed);
  }
};

// A loop of n indices on team T: parallel_for (static) or parallel_for_dynamic, or the OpenMP
// loop with the same schedule.
template <team T, bool dynamic, class F>
void loop(std::int64_t n, F&& f) {
#if defined(_OPENMP)
  if constexpr (T == team::openmp) {
    if constexpr (dynamic) {
#pragma omp parallel for schedule(dynamic, 1)
      for (std::int64_t i = 0; i < n; ++i) f(i);
    } else {
#pragma omp parallel for schedule(static)
      for (std::int64_t i = 0; i < n; ++i) f(i);
    }
    return;
  }
#endif
  if constexpr (dynamic) {
    dsv4::parallel_for_dynamic(0, n, f);
  } else {
    dsv4::parallel_for(0, n, f);
  }
}

// Runs region() once per iteration with the team's threads, as many as the hardware's.
template <team T, class Region>
void time_regions(benchmark::State& state, const task_count& count, Region&& region) {
  const int threads = hardware_threads();
  std::unique_ptr<dsv4::spin_pool> pool;
  std::unique_ptr<dsv4::executor_scope> scope;
  const int saved = dsv4::max_threads();
  if constexpr (T == team::spin_pool) {
    pool = std::make_unique<dsv4::spin_pool>(threads);
    scope = std::make_unique<dsv4::executor_scope>(*pool);
  }
  dsv4::set_num_threads(threads);
#if defined(_OPENMP)
  if constexpr (T == team::openmp) omp_set_num_threads(threads);
#endif
  region();  // the first region starts the team
  const std::int64_t before = count.off.load();
  for (auto _ : state) region();
  state.counters["threads"] = threads;
  state.counters["off_caller"] =
      static_cast<double>(count.off.load() - before) /
      static_cast<double>(count.per_region * static_cast<std::int64_t>(state.iterations()));
  scope.reset();
  dsv4::set_num_threads(saved);
}

template <team T>
void bm_region_empty(benchmark::State& state) {
  task_count count;
  count.per_region = 2;
  time_regions<T>(state, count, [&] { loop<T, false>(2, [&](std::int64_t) { count.add(); }); });
}

template <team T>
void bm_region_tiny(benchmark::State& state) {
  constexpr std::int64_t tasks = 64;
  std::vector<float> out(tasks * 16);  // a cache line per task
  task_count count;
  count.per_region = tasks;
  time_regions<T>(state, count, [&] {
    loop<T, true>(tasks, [&](std::int64_t i) {
      count.add();
      float v = static_cast<float>(i);
      for (int k = 0; k < 8; ++k) v = v * 0.999f + 1.0f;
      out[static_cast<std::size_t>(i * 16)] = v;
    });
    benchmark::ClobberMemory();
  });
}

// Tasks with work to share: 2 tasks of a dependent chain of multiply-adds (a few microseconds
// each). With both threads on cores the region takes one task's time plus the team's hand-off;
// run serially, two. `task_ns` is one task alone, timed before.
float chain(float seed) {
  float v = seed;
  for (int k = 0; k < 1000; ++k) v = v * 0.9999f + 0.5f;
  return v;
}

template <team T>
void bm_region_split(benchmark::State& state) {
  float out[2 * 16] = {};
  double best = 1e30;
  for (int r = 0; r < 200; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    out[0] = chain(out[0]);
    benchmark::ClobberMemory();
    best = std::min(best,
                    std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  task_count count;
  count.per_region = 2;
  time_regions<T>(state, count, [&] {
    loop<T, false>(2, [&](std::int64_t i) {
      count.add();
      out[i * 16] = chain(out[i * 16]);
    });
    benchmark::ClobberMemory();
  });
  state.counters["task_ns"] = best;
}

BENCHMARK(bm_region_empty<team::default_pool>)->Name("bm_region_empty/default")->UseRealTime();
BENCHMARK(bm_region_empty<team::spin_pool>)->Name("bm_region_empty/spin_pool")->UseRealTime();
BENCHMARK(bm_region_tiny<team::default_pool>)->Name("bm_region_tiny/default")->UseRealTime();
BENCHMARK(bm_region_tiny<team::spin_pool>)->Name("bm_region_tiny/spin_pool")->UseRealTime();
BENCHMARK(bm_region_split<team::default_pool>)->Name("bm_region_split/default")->UseRealTime();
BENCHMARK(bm_region_split<team::spin_pool>)->Name("bm_region_split/spin_pool")->UseRealTime();
#if defined(_OPENMP)
BENCHMARK(bm_region_empty<team::openmp>)->Name("bm_region_empty/openmp")->UseRealTime();
BENCHMARK(bm_region_tiny<team::openmp>)->Name("bm_region_tiny/openmp")->UseRealTime();
BENCHMARK(bm_region_split<team::openmp>)->Name("bm_region_split/openmp")->UseRealTime();
#endif

}  // namespace
