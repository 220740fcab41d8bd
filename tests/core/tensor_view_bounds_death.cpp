// Out-of-bounds indexing must stop the program when assertions are on (debug builds).
// expected-output: dsv4 assertion failed: tensor_view index out of bounds
#include <cstdio>
#include <vector>

#include "dsv4/core/tensor_view.hpp"

int main() {
  std::vector<int> buf(6, 7);
  const dsv4::tensor_view<int, 2> v(buf.data(), {2, 3});
  std::printf("in bounds: %d\n", v(1, 2));
  std::printf("out of bounds: %d\n", v(1, 3));  // column 3 of 3: must stop here
  std::printf("DSV4_NOT_REACHED\n");
  return 0;
}
