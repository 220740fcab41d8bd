// parallel_for: the one way dsv4 spreads CPU work over threads.
//
// Uses OpenMP when the build has it, a plain loop otherwise. Each index is processed by exactly
// one thread and no reduction crosses indices, so results are bit-identical for any thread count:
// a caller that needs a reduction over indices does it afterwards, in index order.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace dsv4 {

// Threads parallel_for will use (1 without OpenMP).
inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Sets the threads later parallel_for calls use; n < 1 is taken as 1. No effect without OpenMP.
inline void set_num_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(std::max(1, n));
#else
  (void)n;
#endif
}

// Calls f(i) for every i in [begin, end), statically partitioned over the threads.
template <class F>
void parallel_for(std::int64_t begin, std::int64_t end, F&& f) {
#if defined(_OPENMP)
  if (end - begin > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = begin; i < end; ++i) f(i);
    return;
  }
#endif
  for (std::int64_t i = begin; i < end; ++i) f(i);
}

// Calls f(i) for every i in [begin, end), each thread taking the next index whenever it is free:
// on a busy machine a thread that is descheduled then holds the others up by at most the index it
// is on, where a static split would make them wait for its whole share. For work whose results
// do not depend on which thread computes an index (dsv4's determinism rule), only the time does.
template <class F>
void parallel_for_dynamic(std::int64_t begin, std::int64_t end, F&& f) {
#if defined(_OPENMP)
  if (end - begin > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t i = begin; i < end; ++i) f(i);
    return;
  }
#endif
  for (std::int64_t i = begin; i < end; ++i) f(i);
}

// A hint to the core that the caller is spinning on a value another thread will change (x86's
// pause: the spinning thread yields its pipeline slots and leaves the loop without a
// memory-order stall).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace dsv4
