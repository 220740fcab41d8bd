// residual_policy: how a DeepSeek-V4 block carries its residual stream between sublayers.
//
// Why a concept: the released model uses manifold-constrained hyper-connections (mHC, spec §3) with
// n_hc = 4 parallel streams, but ablations need the plain residual x + f(x) and the unconstrained
// hyper-connection that mHC was introduced to tame. A block is written once against this concept:
//
//   X = R::expand(e)                      embedding (tokens, d)  -> streams (tokens, streams, d)
//   per site (attention, FFN):
//     x_in = R::pre(site weights, X)      streams -> sublayer input (tokens, d), keeps a site_state
//     y    = sublayer(norm(x_in))
//     X    = R::post(y, X, site_state)    streams (tokens, streams, d), may be written in place
//   h = R::head(head weights, X)          streams -> (tokens, d) before the final norm
//
// The site state (the coefficients pre computes and post consumes) lives in caller-owned scratch:
// R::state_floats(tokens) floats, laid out by R::make_state.
#pragma once

#include <concepts>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::mhc {

// The run-time numbers of every residual policy: spec §1.1 rms_norm_eps, hc_eps, hc_sinkhorn_iters.
struct hc_settings {
  float rms_norm_eps = 1e-6f;  // the unweighted RMS over the flattened streams
  float hc_eps = 1e-6f;        // added to pre, and inside every Sinkhorn normalization
  int sinkhorn_iters = 20;     // column normalizations of the Sinkhorn projection
};

// The iterations come from the config (a structural integer), the eps values from the run-time params.
constexpr hc_settings settings_of(const config::model_config& c, const config::model_params& p) {
  return {p.rms_norm_eps, p.hc_eps, c.hc_sinkhorn_iters};
}

template <class R>
concept residual_policy = requires {
  { R::streams } -> std::convertible_to<int>;  // residual streams carried between sublayers
  typename R::site_weights;                    // one site's parameters (attention or FFN)
  typename R::head_weights;                    // the stream collapse before the final norm
  typename R::site_state;                      // what pre hands to post, views into scratch
}
&&requires(const typename R::site_weights& w, const typename R::head_weights& hw,
           const typename R::site_state& s, const hc_settings& cfg, float* scratch, index_t tokens,
           tensor_view<const float, 2> rows_in, tensor_view<float, 2> rows_out,
           tensor_view<const float, 3> streams_in, tensor_view<float, 3> streams_out) {
  { R::state_floats(tokens) } -> std::same_as<index_t>;
  { R::make_state(scratch, tokens) } -> std::same_as<typename R::site_state>;
  { R::expand(rows_in, streams_out) } -> std::same_as<status>;
  { R::pre(w, cfg, streams_in, rows_out, s) } -> std::same_as<status>;
  { R::post(rows_in, streams_in, s, streams_out) } -> std::same_as<status>;
  { R::head(hw, cfg, streams_in, rows_out) } -> std::same_as<status>;
};

}  // namespace dsv4::mhc
