// Views of a test's std::vector as a batch of b matrices of n x m (the layout muon_step and
// newton_schulz take), writable and read-only.
#pragma once

#include <vector>

#include "dsv4/core/tensor_view.hpp"

namespace dsv4::test {

inline tensor_view<float, 3> view(std::vector<float>& v, index_t b, index_t n, index_t m) {
  return {v.data(), {b, n, m}};
}
inline tensor_view<const float, 3> cview(const std::vector<float>& v, index_t b, index_t n, index_t m) {
  return {v.data(), {b, n, m}};
}

}  // namespace dsv4::test
