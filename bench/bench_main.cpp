// Benchmark main: measures the machine's roofline first and prints it with the results, so every
// fraction in the table is relative to a figure taken in the same run.
#include <benchmark/benchmark.h>

#include <string>

#include "roofline.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const auto& r = dsv4::bench::roofline();
  benchmark::AddCustomContext("dsv4_threads", std::to_string(r.threads));
  benchmark::AddCustomContext("dsv4_read_bandwidth_GBps", std::to_string(r.read_bytes_per_s / 1e9));
  benchmark::AddCustomContext("dsv4_fma_peak_GFLOPs", std::to_string(r.fma_flops_per_s / 1e9));
  benchmark::AddCustomContext("dsv4_int8_peak_GOPs", std::to_string(r.int8_ops_per_s / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
