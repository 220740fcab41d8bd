// Random test data with fixed seeds: the one generator every test uses, so that "random" means the
// same distribution everywhere and a failing case can be replayed from its seed.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace dsv4::test {

// n samples of N(0, stddev^2) from std::mt19937(seed).
inline std::vector<float> random_normal(std::size_t n, unsigned seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace dsv4::test
