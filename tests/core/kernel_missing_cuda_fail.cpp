// Using an operation with a backend whose specialization was not included must not compile, and
// the message must say which header to include.
// expected-error: no CUDA kernel for this operation: include the operation's \.cuh twin
#include "dsv4/core/backend.hpp"
#include "dsv4/core/status.hpp"

namespace {
struct scale_op {
  struct params {
    using op = scale_op;
    float factor;
  };
};
}  // namespace

template <>
struct dsv4::kernel<scale_op, dsv4::cpu> {
  static dsv4::status run(const scale_op::params&) { return {}; }
};

int main() {
  const scale_op::params p{2.0f};
  dsv4::status s = dsv4::run<dsv4::cpu>(p);
#if defined(DSV4_EXPECT_FAILURE)
  s = dsv4::run<dsv4::cuda<90>>(p);  // only the CPU specialization is visible here
#endif
  return s.ok() ? 0 : 1;
}
