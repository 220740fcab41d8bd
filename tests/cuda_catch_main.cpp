// The Catch2 main of dsv4's CUDA test executables: without a usable GPU it reports the test as
// skipped (exit code 77, registered with ctest as SKIP_RETURN_CODE) instead of failing or passing.
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime.h>
#include <catch2/catch.hpp>

#include <cstdio>

int main(int argc, char* argv[]) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
