// Backend tags and the kernel<Op, Backend> trait through which every operation dispatches.
//
// An operation is a tag type (`dequantize_fp8_op`, ...) with a nested `params` struct. Its CPU
// specialization `kernel<Op, cpu>` lives in the op's `.hpp`; its CUDA specialization
// `kernel<Op, cuda<Arch>>` in the same-stem `.cuh`. Asking for a backend whose specialization was
// not included fails to compile with a message that says what to include, instead of falling back
// to another path behind the user's back.
#pragma once

#include <concepts>
#include <type_traits>

namespace dsv4 {

// The host CPU: the readable specification of every operation.
struct cpu {
  static constexpr const char* name = "cpu";
};

// An NVIDIA GPU of compute capability Arch/10 (80 = Ampere A100, 90 = Hopper H100/H200).
template <int Arch>
struct cuda {
  static_assert(Arch >= 80, "dsv4::cuda<Arch>: dsv4 supports compute capability 8.0 and newer");
  static constexpr int arch = Arch;
  static constexpr const char* name = "cuda";
};

template <class T>
inline constexpr bool is_cuda_backend_v = false;
template <int Arch>
inline constexpr bool is_cuda_backend_v<cuda<Arch>> = true;

template <class B>
concept backend = std::same_as<B, cpu> || is_cuda_backend_v<B>;

template <class...>
inline constexpr bool dependent_false = false;

// Primary template: selected only when no header specialized the operation for this backend.
template <class Op, class Backend>
struct kernel {
  static_assert(backend<Backend>, "dsv4::kernel<Op, Backend>: Backend must be dsv4::cpu or dsv4::cuda<Arch>");
  static_assert(!std::same_as<Backend, cpu> || dependent_false<Op>,
                "dsv4: no CPU kernel for this operation: include the .hpp header that defines the "
                "operation (e.g. dsv4/core/quant.hpp for dequantize_fp8_op)");
  static_assert(!is_cuda_backend_v<Backend> || dependent_false<Op>,
                "dsv4: no CUDA kernel for this operation: include the operation's .cuh twin (e.g. "
                "dsv4/core/quant.cuh next to dsv4/core/quant.hpp) in a translation unit compiled "
                "by nvcc and link dsv4::cuda");
};

// Runs an operation on a backend: run<cpu>(p) or run<cuda<90>>(p, stream...).
template <class Backend, class Params, class... Extra>
auto run(const Params& p, Extra&&... extra) {
  return kernel<typename Params::op, Backend>::run(p, static_cast<Extra&&>(extra)...);
}

}  // namespace dsv4
