// Backend tags and kernel<Op, Backend> dispatch.
#include <catch2/catch.hpp>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/status.hpp"

namespace {
struct scale_op {
  struct params {
    using op = scale_op;
    const float* in;
    float* out;
    float factor;
  };
};
}  // namespace

template <>
struct dsv4::kernel<scale_op, dsv4::cpu> {
  static dsv4::status run(const scale_op::params& p) {
    *p.out = *p.in * p.factor;
    return {};
  }
};

TEST_CASE("run<Backend> dispatches to the specialization for that backend", "[core][backend]") {
  const float in = 3.0f;
  float out = 0.0f;
  CHECK(dsv4::run<dsv4::cpu>(scale_op::params{&in, &out, 2.0f}).ok());
  CHECK(out == 6.0f);
}

TEST_CASE("backend concept accepts cpu and cuda<Arch> only", "[core][backend]") {
  STATIC_REQUIRE(dsv4::backend<dsv4::cpu>);
  STATIC_REQUIRE(dsv4::backend<dsv4::cuda<80>>);
  STATIC_REQUIRE(dsv4::backend<dsv4::cuda<90>>);
  STATIC_REQUIRE_FALSE(dsv4::backend<int>);
  STATIC_REQUIRE(dsv4::cuda<90>::arch == 90);
}
