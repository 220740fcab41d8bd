// The plain residual x + f(x) as a residual_policy: one stream, no weights, no coefficients.
//
// Why: mHC (hyper_connection.hpp) is what DeepSeek-V4 ships, but a block written against
// residual_policy must also run as a classic pre-norm transformer so that users can ablate the
// hyper-connections. With one stream, expand, pre and head are copies and post is X' = X + y.
#pragma once

#include <string>
#include <string_view>

#include "dsv4/core/backend.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/mhc/concepts.hpp"
#include "dsv4/mhc/hyper_connection.hpp"

namespace dsv4::mhc {

// ---- residual_add_op: out = x + y ---------------------------------------------------------------
struct residual_add_op {
  struct params {
    using op = residual_add_op;
    tensor_view<const float, 2> x;  // (tokens, d) residual
    tensor_view<const float, 2> y;  // (tokens, d) sublayer output
    tensor_view<float, 2> out;      // (tokens, d); the very view x or y (in place), or disjoint from both
  };

  static status check(const params& p) {
    DSV4_TRY(check_shape(p.x, {any_extent, any_extent}, "x"));
    DSV4_TRY(check_shape(p.y, p.x.extents(), "y"));
    DSV4_TRY(check_shape(p.out, p.x.extents(), "out"));
    DSV4_TRY(detail::check_output_view(p.out, "out"));
    DSV4_TRY(detail::check_in_place_or_disjoint(p.out, p.x, "out", "x"));
    return detail::check_in_place_or_disjoint(p.out, p.y, "out", "y");
  }
};

namespace detail {
template <>
struct cpu_kernel<residual_add_op> {
  static status run(const residual_add_op::params& p) {
    const index_t d = p.x.extent(1);
    parallel_for(0, p.x.extent(0), [&](index_t t) {
      for (index_t k = 0; k < d; ++k) p.out(t, k) = p.x(t, k) + p.y(t, k);
    });
    return {};
  }
};
}  // namespace detail

struct plain_residual {
  static constexpr int streams = 1;
  struct site_weights {};
  struct head_weights {};
  struct site_state {};

  static constexpr index_t state_floats(index_t) { return 0; }
  static site_state make_state(float*, index_t) { return {}; }

  template <class Backend = cpu, class... Extra>
  static status expand(tensor_view<const float, 2> e, tensor_view<float, 3> x, Extra&&... extra) {
    DSV4_TRY(detail::check_stream_count(x.extent(1), streams, "x"));
    return run<Backend>(hc_expand_op::params{e, x}, static_cast<Extra&&>(extra)...);
  }

  template <class Backend = cpu, class... Extra>
  static status pre(const site_weights&, const hc_settings&, tensor_view<const float, 3> x,
                    tensor_view<float, 2> x_in, const site_state&, Extra&&... extra) {
    return copy_stream<Backend>(x, x_in, "x_in", static_cast<Extra&&>(extra)...);
  }

  template <class Backend = cpu, class... Extra>
  static status post(tensor_view<const float, 2> y, tensor_view<const float, 3> x, const site_state&,
                     tensor_view<float, 3> out, Extra&&... extra) {
    DSV4_TRY(detail::check_stream_count(x.extent(1), streams, "x"));
    DSV4_TRY(detail::check_stream_count(out.extent(1), streams, "out"));
    return run<Backend>(residual_add_op::params{rows_of(x), y, rows_of(out)}, static_cast<Extra&&>(extra)...);
  }

  template <class Backend = cpu, class... Extra>
  static status head(const head_weights&, const hc_settings&, tensor_view<const float, 3> x,
                     tensor_view<float, 2> h, Extra&&... extra) {
    return copy_stream<Backend>(x, h, "h", static_cast<Extra&&>(extra)...);
  }

 private:
  // The single stream of x (tokens, 1, d) as (tokens, d).
  template <class T>
  static tensor_view<T, 2> rows_of(const tensor_view<T, 3>& x) {
    return {x.data(), {x.extent(0), x.extent(2)}, {x.stride(0), x.stride(2)}};
  }

  // rows (tokens, d) <- the single stream of x: the expansion run backwards, onto one stream. The
  // arguments are checked here under the caller's names before the expansion sees them as e and x.
  template <class Backend, class... Extra>
  static status copy_stream(tensor_view<const float, 3> x, tensor_view<float, 2> rows,
                            std::string_view rows_name, Extra&&... extra) {
    DSV4_TRY(check_shape(x, {any_extent, any_extent, any_extent}, "x"));
    DSV4_TRY(detail::check_stream_count(x.extent(1), streams, "x"));
    DSV4_TRY(check_shape(rows, {x.extent(0), x.extent(2)}, rows_name));
    if (overlaps(rows, x)) return {errc::invalid_argument, std::string(rows_name) + ": overlaps x"};
    const tensor_view<float, 3> one(rows.data(), {rows.extent(0), 1, rows.extent(1)},
                                    {rows.stride(0), rows.extent(1) * rows.stride(1), rows.stride(1)});
    return run<Backend>(hc_expand_op::params{rows_of(x), one}, static_cast<Extra&&>(extra)...);
  }
};

static_assert(residual_policy<plain_residual>);

}  // namespace dsv4::mhc
