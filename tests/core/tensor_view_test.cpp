// tensor_view: indexing, strides, sub-views, shape checks.
#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

#include "dsv4/core/tensor_view.hpp"

using dsv4::tensor_view;

TEST_CASE("contiguous views index in row-major order", "[core][tensor_view]") {
  std::vector<int> buf(2 * 3 * 4);
  std::iota(buf.begin(), buf.end(), 0);
  const tensor_view<int, 3> v(buf.data(), {2, 3, 4});  // (2, 3, 4)
  CHECK(v.size() == 24);
  CHECK(v.is_contiguous());
  CHECK(v.strides() == dsv4::extents_t<3>{12, 4, 1});
  CHECK(v(1, 2, 3) == 23);
  CHECK(v(0, 1, 2) == 6);
  CHECK(v[1](0, 1) == 13);  // sub-view (3, 4) of the second plane
  CHECK(v[1][2][3] == 23);  // down to rank 1
  CHECK(v.slice(1, 2)(0, 0, 0) == 12);
  CHECK(v.slice(1, 2).extent(0) == 1);
}

TEST_CASE("strided views read a transposed layout", "[core][tensor_view]") {
  std::vector<float> buf(6);
  std::iota(buf.begin(), buf.end(), 0.0f);                    // row-major (2, 3)
  const tensor_view<float, 2> t(buf.data(), {3, 2}, {1, 3});  // its transpose (3, 2)
  CHECK_FALSE(t.is_contiguous());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j) CHECK(t(i, j) == buf[static_cast<size_t>(j * 3 + i)]);
  CHECK_FALSE(dsv4::check_contiguous(t, "t").ok());
}

TEST_CASE("views of T convert to views of const T", "[core][tensor_view]") {
  std::vector<double> buf(4, 1.5);
  tensor_view<double, 1> w(buf.data(), {4});
  tensor_view<const double, 1> r = w;
  w(2) = 3.0;
  CHECK(r(2) == 3.0);
  CHECK(r.data() == w.data());
}

TEST_CASE("check_shape names the tensor and both shapes", "[core][tensor_view]") {
  std::vector<float> buf(1024 * 3);
  const tensor_view<float, 2> v(buf.data(), {1024, 3});
  CHECK(dsv4::check_shape(v, {1024, 3}, "wq_a.weight").ok());
  CHECK(dsv4::check_shape(v, {-1, 3}, "wq_a.weight").ok());
  const dsv4::status s = dsv4::check_shape(v, {1024, 4}, "wq_a.weight");
  CHECK(s.code() == dsv4::errc::shape_mismatch);
  CHECK(s.message() == "wq_a.weight: expected (1024, 4), got (1024, 3)");
}
