// The machine's limits, measured in the same run as the benchmarks that are compared to them.
//
// read bandwidth: bytes/s of a streaming read over a buffer far larger than the caches, with
// every thread parallel_for uses. FMA peak: FLOP/s of independent fused multiply-add chains in
// the widest vectors the compiler targets, on every thread. Int8 dot-product peak: operations/s
// (two per multiply-add of int8 pairs) of the widest int8 dot product the compiler targets
// (vpdpbusd with AVX-512 VNNI; vpmaddubsw, vpmaddwd and vpaddd with AVX2), on every thread, the
// bound of the int8 kernels of numerics::fast. All at start-up (reported in the run's context) and
// again after each benchmark (best_roofline). A benchmark reports its achieved fraction with the
// counters bandwidth_fraction(), fma_fraction(), int8_dot_fraction() and roofline_fraction() make.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "dsv4/core/parallel.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace dsv4::bench {

struct machine_roofline {
  double read_bytes_per_s;
  double fma_flops_per_s;
  double int8_ops_per_s;
  int threads;
};

namespace detail {
using clock = std::chrono::steady_clock;

inline double best_seconds(int repeats, auto&& f) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(clock::now() - t0).count());
  }
  return best;
}

// The 256 MiB buffer the bandwidth is read from, touched first by the reading threads (made once
// per process: later measurements reuse it).
inline const std::vector<float>& bandwidth_buffer() {
  static const std::vector<float> buf = [] {
    const std::int64_t n = std::int64_t{1} << 26;
    std::vector<float> b(static_cast<size_t>(n));
    const int parts = std::max(1, dsv4::max_threads());
    dsv4::parallel_for(0, parts, [&](std::int64_t p) {
      for (std::int64_t i = p * n / parts; i < (p + 1) * n / parts; ++i) b[static_cast<size_t>(i)] = 1.0f;
    });
    return b;
  }();
  return buf;
}

// Each thread reads its part as `streams` sequential streams side by side (a 64-byte line of each
// in turn). One stream per thread leaves memory idle part of the time and understates what the
// GEMVs, which read several rows at once, get from it; four streams per thread keep it busy, and
// more read no faster.
inline constexpr int bandwidth_streams = 4;

inline double measure_read_bandwidth(int repeats) {
  const std::vector<float>& buf = bandwidth_buffer();
  const auto n = static_cast<std::int64_t>(buf.size());
  const int parts = std::max(1, dsv4::max_threads());
  std::vector<float> sums(static_cast<size_t>(parts));
  // Floats per stream: each part rounded down to whole 64-byte lines per stream.
  const std::int64_t len = (n / parts) / bandwidth_streams / 16 * 16;
  const double s = best_seconds(repeats, [&] {
    dsv4::parallel_for(0, parts, [&](std::int64_t p) {
      const float* x = buf.data() + p * (n / parts);
      float acc[bandwidth_streams][16] = {};
      for (std::int64_t i = 0; i < len; i += 16)
        for (int j = 0; j < bandwidth_streams; ++j)
          for (int k = 0; k < 16; ++k) acc[j][k] += x[j * len + i + k];
      float t = 0;
      for (const auto& a : acc)
        for (float v : a) t += v;
      sums[static_cast<size_t>(p)] = t;
    });
    benchmark::DoNotOptimize(sums.data());
  });
  return static_cast<double>(len) * bandwidth_streams * parts * sizeof(float) / s;
}

// measure_fma_peak's loop: independent chains of 8-float multiply-adds on every thread.
inline constexpr int fma_probe_chains = 12, fma_probe_lanes = 8;
inline double fma_probe_flops_per_iteration() {
  return 2.0 * fma_probe_lanes * fma_probe_chains * std::max(1, dsv4::max_threads());
}

// The FMA peak over `iters` multiply-adds per chain (2^23 by default).
inline double measure_fma_peak(int repeats, std::int64_t iters = std::int64_t{1} << 23) {
  using vec = float __attribute__((vector_size(fma_probe_lanes * sizeof(float))));
  constexpr int chains = fma_probe_chains;
  const int parts = std::max(1, dsv4::max_threads());
  std::vector<float> out(static_cast<size_t>(parts));
  const double s = best_seconds(repeats, [&] {
    dsv4::parallel_for(0, parts, [&](std::int64_t p) {
      vec acc[chains];
      const vec a = {}, b = vec{} + 0.999999f;
      for (int c = 0; c < chains; ++c) acc[c] = vec{} + static_cast<float>(c + p);
      vec m = a + 1e-7f;
      benchmark::DoNotOptimize(m);
      for (std::int64_t i = 0; i < iters; ++i)
        for (int c = 0; c < chains; ++c) acc[c] = acc[c] * b + m;
      float t = 0;
      for (int c = 0; c < chains; ++c) t += acc[c][0];
      out[static_cast<size_t>(p)] = t;
    });
    benchmark::DoNotOptimize(out.data());
  });
  return fma_probe_flops_per_iteration() * static_cast<double>(iters) / s;
}

// measure_int8_peak's loop: independent chains of 256-bit int8 dot products (32 multiply-adds of
// byte pairs into eight int32 lanes per step) on every thread.
inline constexpr int int8_probe_chains = 8, int8_probe_macs = 32;
inline double int8_probe_ops_per_iteration() {
  return 2.0 * int8_probe_macs * int8_probe_chains * std::max(1, dsv4::max_threads());
}

// The int8 dot-product peak over `iters` steps per chain. An empty asm statement hands each step
// its byte operand anew, so that the compiler can neither hoist nor merge the products.
inline double measure_int8_peak(int repeats, std::int64_t iters = std::int64_t{1} << 22) {
  constexpr int chains = int8_probe_chains;
  const int parts = std::max(1, dsv4::max_threads());
  std::vector<std::int32_t> out(static_cast<size_t>(parts));
  const double s = best_seconds(repeats, [&] {
    dsv4::parallel_for(0, parts, [&](std::int64_t p) {
#if defined(__AVX2__)
      __m256i acc[chains];
      for (int c = 0; c < chains; ++c) acc[c] = _mm256_set1_epi32(c + static_cast<int>(p));
      const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-5);
#if !(defined(__AVX512VNNI__) && defined(__AVX512VL__))
      const __m256i ones = _mm256_set1_epi16(1);
#endif
      for (std::int64_t i = 0; i < iters; ++i)
        for (int c = 0; c < chains; ++c) {
          __m256i u = a;
          __asm__ volatile("" : "+x"(u));
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
          acc[c] = _mm256_dpbusd_epi32(acc[c], u, b);
#else
          acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(_mm256_maddubs_epi16(u, b), ones));
#endif
        }
      std::int32_t t = 0;
      for (int c = 0; c < chains; ++c) t += _mm256_extract_epi32(acc[c], 0);
#else  // no AVX2: the same products in scalar integers, each operand handed anew (no folding)
      std::int32_t acc[chains] = {};
      for (std::int64_t i = 0; i < iters; ++i)
        for (int c = 0; c < chains; ++c)
          for (int k = 0; k < int8_probe_macs; ++k) {
            std::int8_t u = 3;
            __asm__ volatile("" : "+r"(u));
            acc[c] += u * std::int8_t{-5};
          }
      std::int32_t t = 0;
      for (int c = 0; c < chains; ++c) t += acc[c];
#endif
      out[static_cast<size_t>(p)] = t;
    });
    benchmark::DoNotOptimize(out.data());
  });
  return int8_probe_ops_per_iteration() * static_cast<double>(iters) / s;
}
}  // namespace detail

// Measured once per process, on first use (reported in the run's context).
inline const machine_roofline& roofline() {
  static const machine_roofline r{detail::measure_read_bandwidth(5), detail::measure_fma_peak(9),
                                  detail::measure_int8_peak(5), dsv4::max_threads()};
  return r;
}

// The limits the fractions divide by: the best of every measurement so far, the start-up one and
// one more after each benchmark (when the last is more than a second old: FMA peak best of 3 runs
// of 2^23 multiply-adds per chain, int8 peak best of 2 runs of 2^22 steps per chain, read
// bandwidth best of 2 reads of 256 MiB). On a shared host
// the limits move: for stretches of seconds the two threads get half the FMA peak (as if they
// shared one core) or less bandwidth, and a start-up sample taken then would inflate every
// fraction of the run. The running best never overstates what the machine can do, so a fraction
// can only come out low, when a benchmark itself ran in such a stretch.
inline const machine_roofline& best_roofline() {
  static machine_roofline best = roofline();
  static detail::clock::time_point at = detail::clock::now();
  if (detail::clock::now() - at > std::chrono::seconds(1)) {
    best.fma_flops_per_s = std::max(best.fma_flops_per_s, detail::measure_fma_peak(3));
    best.int8_ops_per_s = std::max(best.int8_ops_per_s, detail::measure_int8_peak(2));
    best.read_bytes_per_s = std::max(best.read_bytes_per_s, detail::measure_read_bandwidth(2));
    at = detail::clock::now();
  }
  return best;
}

// Counters whose reported value is achieved bandwidth (or FLOP rate) / the machine's.
inline benchmark::Counter bandwidth_fraction(double bytes_per_iteration) {
  return benchmark::Counter(bytes_per_iteration / best_roofline().read_bytes_per_s,
                            benchmark::Counter::kIsIterationInvariantRate);
}
inline benchmark::Counter fma_fraction(double flops_per_iteration) {
  return benchmark::Counter(flops_per_iteration / best_roofline().fma_flops_per_s,
                            benchmark::Counter::kIsIterationInvariantRate);
}
// Achieved int8 operations (two per multiply-add of an int8 pair) / the int8 dot-product peak.
inline benchmark::Counter int8_dot_fraction(double ops_per_iteration) {
  return benchmark::Counter(ops_per_iteration / best_roofline().int8_ops_per_s,
                            benchmark::Counter::kIsIterationInvariantRate);
}

// The roofline bound: time at the machine's bandwidth or FMA peak, whichever is longer, over the
// time taken (1 = on the roofline).
inline benchmark::Counter roofline_fraction(double bytes_per_iteration, double flops_per_iteration) {
  return benchmark::Counter(std::max(bytes_per_iteration / best_roofline().read_bytes_per_s,
                                     flops_per_iteration / best_roofline().fma_flops_per_s),
                            benchmark::Counter::kIsIterationInvariantRate);
}

// roofline_fraction paired in time, for calls bound by their multiply-adds (every attention decode
// step): the FMA peak is measured again after each timed call, by a probe of about the call's
// bound (at least 1 ms), and each call is compared with the mean of the probes before and after
// it; the fraction is the median over the calls. The host's capacity moves from one stretch of
// milliseconds to the next (at times the two threads get one core's peak), so roofline_fraction,
// which compares a whole benchmark with the best stretch of the run, comes out low whenever the
// benchmark ran in slower ones; this one compares each call with what the machine did around it.
// The bytes bound is the running best bandwidth's when the benchmark starts.
class paired_roofline {
 public:
  // The bytes bound is taken once here: refreshing the running best between calls would stream
  // 256 MiB through the caches and hand the next call cold ones.
  paired_roofline(double bytes, double flops)
      : bytes_seconds_(bytes / best_roofline().read_bytes_per_s), flops_(flops) {
    const double probe_flops = std::max(1e-3 * best_roofline().fma_flops_per_s, flops);
    iters_ = static_cast<std::int64_t>(probe_flops / detail::fma_probe_flops_per_iteration()) + 1;
    peak_ = detail::measure_fma_peak(1, iters_);
  }

  // Times call() once and probes the peak after it; returns the call's seconds.
  double timed(auto&& call) {
    const auto t0 = detail::clock::now();
    call();
    const double s = std::chrono::duration<double>(detail::clock::now() - t0).count();
    const double next = detail::measure_fma_peak(1, iters_);
    const double bound = std::max(bytes_seconds_, flops_ / ((peak_ + next) / 2));
    ratios_.push_back(bound / s);
    peak_ = next;
    return s;
  }

  double median() {
    if (ratios_.empty()) return 0;
    const auto mid = ratios_.begin() + static_cast<std::ptrdiff_t>(ratios_.size() / 2);
    std::nth_element(ratios_.begin(), mid, ratios_.end());
    return *mid;
  }

 private:
  double bytes_seconds_, flops_;  // the call's time at the read bandwidth; its FLOPs
  std::int64_t iters_ = 0;
  double peak_ = 0;  // the probe before the next call
  std::vector<double> ratios_;
};

}  // namespace dsv4::bench
