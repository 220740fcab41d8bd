// Umbrella header for host code: every CPU implementation, config and accounting of dsv4.
// CUDA translation units include dsv4/cuda.cuh instead.
#pragma once

#include "dsv4/core/backend.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/linear.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/math.hpp"
#include "dsv4/core/numerics.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/sgemm.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"

#include "dsv4/config/accounting.hpp"
#include "dsv4/config/model_config.hpp"
#include "dsv4/config/presets.hpp"

#include "dsv4/attn/attention.hpp"
#include "dsv4/attn/compressor.hpp"
#include "dsv4/attn/concepts.hpp"
#include "dsv4/attn/indexer.hpp"
#include "dsv4/attn/kv_cache.hpp"
#include "dsv4/attn/kv_codec.hpp"
#include "dsv4/attn/projection.hpp"
#include "dsv4/attn/rope.hpp"
#include "dsv4/attn/sparse_attention.hpp"

#include "dsv4/mhc/concepts.hpp"
#include "dsv4/mhc/hyper_connection.hpp"
#include "dsv4/mhc/residual.hpp"
#include "dsv4/mhc/sinkhorn.hpp"

#include "dsv4/moe/concepts.hpp"
#include "dsv4/moe/dispatch.hpp"
#include "dsv4/moe/experts.hpp"
#include "dsv4/moe/load_balance.hpp"
#include "dsv4/moe/moe_ffn.hpp"
#include "dsv4/moe/router.hpp"

#include "dsv4/optim/adamw.hpp"
#include "dsv4/optim/concepts.hpp"
#include "dsv4/optim/muon.hpp"
#include "dsv4/optim/newton_schulz.hpp"
#include "dsv4/optim/param_groups.hpp"
#include "dsv4/optim/state.hpp"
