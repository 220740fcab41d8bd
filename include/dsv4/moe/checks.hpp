// Argument checks shared by the MoE headers: every public function of dsv4::moe validates its
// views, weights and hyper-parameters with these before its first write, and returns a status that
// names the argument at fault.
//
// Why a check of its own for extents: check_shape takes a negative expected extent as "any", so
// an extent derived from a bad view (n = x.extent(0) = -3) would let every other view pass. Each
// view an operation derives sizes from is checked for negative extents first.
//
// The checks build no string unless they fail: they run on every forward, which must not
// allocate (a weight matrix's own check is asked under an empty name first, which keeps its
// messages within the short-string buffer, and again under the real name only to report a failure).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/core/weight_matrix.hpp"
#include "dsv4/moe/concepts.hpp"

namespace dsv4::moe::detail {

// Token-slot pairs are numbered in int32 (dispatch plans, expert ids): n * k must fit.
inline constexpr index_t max_pairs = std::numeric_limits<std::int32_t>::max();

template <class T, std::size_t Rank>
status check_extents(const tensor_view<T, Rank>& v, std::string_view name) {
  for (std::size_t i = 0; i < Rank; ++i)
    if (v.extent(i) < 0)
      return {errc::shape_mismatch,
              std::string(name) + ": negative extent in " + shape_string<Rank>(v.extents())};
  return {};
}

// check_shape on a view whose own extents are checked first; `expected` holds no negative value
// except -1 (any extent).
template <class T, std::size_t Rank>
status check_view(const tensor_view<T, Rank>& v, const extents_t<Rank>& expected, std::string_view name) {
  DSV4_TRY(check_extents(v, name));
  return check_shape(v, expected, name);
}

// The rows of v are read or written through pointers (spans, GEMM rows): unit inner stride.
template <class T, std::size_t Rank>
status check_unit_inner_stride(const tensor_view<T, Rank>& v, std::string_view name) {
  return dsv4::detail::check_unit_inner_stride(v, name);
}

// A weight matrix with at least one row and one column, valid by its own check.
template <weight_matrix W>
status check_matrix(const W& w, std::string_view name) {
  if (w.rows() >= 1 && w.cols() >= 1 && w.check("").ok()) return {};
  if (w.rows() < 1 || w.cols() < 1) {
    return {errc::shape_mismatch, std::string(name) + ": expected at least one row and one column, got (" +
                                      std::to_string(w.rows()) + ", " + std::to_string(w.cols()) + ")"};
  }
  return w.check(name);
}

// k experts per token out of n_experts: k in [1, n_experts].
inline status check_top_k(index_t k, index_t n_experts, std::string_view who) {
  if (k >= 1 && k <= n_experts) return {};
  return {errc::invalid_argument, std::string(who) + ": k = " + std::to_string(k) + " is not in [1, " +
                                      std::to_string(n_experts) + "]"};
}

// route_scale: finite and positive (V4-Flash 1.5, V4-Pro 2.5; model_params::route_scale).
inline status check_route_scale(float route_scale, std::string_view who) {
  if (std::isfinite(route_scale) && route_scale > 0.0f) return {};
  return {errc::invalid_argument, std::string(who) + ": route_scale = " + std::to_string(route_scale) +
                                      " must be finite and positive"};
}

// swiglu_limit: finite and non-negative, 0 meaning no clamp (model_params::swiglu_limit).
inline status check_swiglu_limit(float limit, std::string_view who) {
  if (std::isfinite(limit) && limit >= 0.0f) return {};
  return {errc::invalid_argument, std::string(who) + ": swiglu_limit = " + std::to_string(limit) +
                                      " must be finite and >= 0 (0: no clamp)"};
}

// n tokens of k pairs each, numbered in int32.
inline status check_pairs(index_t n, index_t k, std::string_view name) {
  if (n >= 0 && k >= 0 && (k == 0 || n <= max_pairs / k)) return {};
  return {errc::out_of_range, std::string(name) + ": " + std::to_string(n) + " tokens of " +
                                  std::to_string(k) + " experts exceed the " + std::to_string(max_pairs) +
                                  " pairs a plan numbers"};
}

// The hidden states of a batch, x (n, d) with n >= 0 and rows of unit stride; sets n.
inline status check_input_x(const ffn_input& in, index_t d, index_t& n) {
  DSV4_TRY(check_extents(in.x, "x"));
  n = in.x.extent(0);
  DSV4_TRY(check_shape(in.x, {n, d}, "x"));
  return check_unit_inner_stride(in.x, "x");
}

}  // namespace dsv4::moe::detail
