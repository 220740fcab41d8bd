// Random test data with fixed seeds: the one generator every test uses, so that "random" means the
// same distribution everywhere and a failing case can be replayed from its seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace dsv4::test {

// `bytes` bytes of workspace aligned to a cache line, as the library's workspaces require.
struct aligned_workspace {
  std::vector<std::byte> storage;
  std::span<std::byte> bytes;
  explicit aligned_workspace(std::size_t size) : storage(size + 64) {
    const auto skew = reinterpret_cast<std::uintptr_t>(storage.data()) % 64;
    bytes = std::span<std::byte>(storage.data() + (64 - skew) % 64, size);
  }
};

// n samples of N(0, stddev^2) from std::mt19937(seed).
inline std::vector<float> random_normal(std::size_t n, unsigned seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace dsv4::test
