// tensor_view<T, Rank>: a non-owning strided view, the currency of every operation.
//
// The rank is a compile-time constant so that indexing compiles to a fixed dot product; extents
// and strides (in elements) are run-time values. Engines own the memory; operations take views of
// their inputs, outputs and workspace. Indexing is bounds-checked when DSV4_ASSERT is enabled
// (debug builds), and shape checks at an operation's boundary return a status naming the tensor.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"

namespace dsv4 {

using index_t = std::int64_t;

template <std::size_t Rank>
using extents_t = std::array<index_t, Rank>;

// "(4, 4096)"
template <std::size_t Rank>
std::string shape_string(const extents_t<Rank>& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < Rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(e[i]);
  }
  return s + ")";
}

template <std::size_t Rank>
DSV4_HOST_DEVICE constexpr extents_t<Rank> row_major_strides(const extents_t<Rank>& e) {
  extents_t<Rank> s{};
  index_t stride = 1;
  for (std::size_t i = Rank; i-- > 0;) {
    s[i] = stride;
    stride *= e[i];
  }
  return s;
}

template <class T, std::size_t Rank>
class tensor_view {
  static_assert(Rank >= 1, "tensor_view: rank must be at least 1");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  static constexpr std::size_t rank = Rank;

  tensor_view() = default;
  // Contiguous row-major view.
  DSV4_HOST_DEVICE tensor_view(T* data, const extents_t<Rank>& extents)
      : data_(data), extents_(extents), strides_(row_major_strides<Rank>(extents)) {}
  DSV4_HOST_DEVICE tensor_view(T* data, const extents_t<Rank>& extents, const extents_t<Rank>& strides)
      : data_(data), extents_(extents), strides_(strides) {}
  // A view of T converts to a view of const T.
  template <class U>
  requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>) DSV4_HOST_DEVICE
      tensor_view(const tensor_view<U, Rank>& o)  // NOLINT(google-explicit-constructor)
      : data_(o.data()), extents_(o.extents()), strides_(o.strides()) {}

  DSV4_HOST_DEVICE T* data() const { return data_; }
  DSV4_HOST_DEVICE const extents_t<Rank>& extents() const { return extents_; }
  DSV4_HOST_DEVICE const extents_t<Rank>& strides() const { return strides_; }
  DSV4_HOST_DEVICE index_t extent(std::size_t i) const { return extents_[i]; }
  DSV4_HOST_DEVICE index_t stride(std::size_t i) const { return strides_[i]; }
  DSV4_HOST_DEVICE index_t size() const {
    index_t n = 1;
    for (index_t e : extents_) n *= e;
    return n;
  }
  DSV4_HOST_DEVICE bool empty() const { return size() == 0; }
  DSV4_HOST_DEVICE bool is_contiguous() const { return strides_ == row_major_strides<Rank>(extents_); }

  template <class... I>
  requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...)) DSV4_HOST_DEVICE T& operator()(
      I... idx) const {
    const index_t i[Rank] = {static_cast<index_t>(idx)...};
    index_t off = 0;
    for (std::size_t k = 0; k < Rank; ++k) {
      DSV4_ASSERT(i[k] >= 0 && i[k] < extents_[k], "tensor_view index out of bounds");
      off += i[k] * strides_[k];
    }
    return data_[off];
  }

  // The sub-view at index i of the first dimension: (e0, e1, ..., ek) -> (e1, ..., ek).
  DSV4_HOST_DEVICE auto operator[](index_t i) const requires(Rank > 1) {
    DSV4_ASSERT(i >= 0 && i < extents_[0], "tensor_view index out of bounds");
    extents_t<Rank - 1> e{}, s{};
    for (std::size_t k = 1; k < Rank; ++k) {
      e[k - 1] = extents_[k];
      s[k - 1] = strides_[k];
    }
    return tensor_view<T, Rank - 1>(data_ + i * strides_[0], e, s);
  }
  DSV4_HOST_DEVICE T& operator[](index_t i) const requires(Rank == 1) { return (*this)(i); }

  // Rows [begin, end) of the first dimension, same rank.
  DSV4_HOST_DEVICE tensor_view slice(index_t begin, index_t end) const {
    DSV4_ASSERT(0 <= begin && begin <= end && end <= extents_[0], "tensor_view slice out of bounds");
    extents_t<Rank> e = extents_;
    e[0] = end - begin;
    return tensor_view(data_ + begin * strides_[0], e, strides_);
  }

 private:
  T* data_ = nullptr;
  extents_t<Rank> extents_{};
  extents_t<Rank> strides_{};
};

template <class T, std::size_t Rank>
tensor_view(T*, const extents_t<Rank>&) -> tensor_view<T, Rank>;

// An extent an operation accepts whatever it is (in check_shape's `expected`).
inline constexpr index_t any_extent = -1;

// Checks a view against the extents an operation needs; any_extent in `expected` accepts any
// extent. A view with a negative extent, or whose span of elements does not fit in 64 bits of
// bytes, is rejected whatever is expected, so an extent computed from a bad one cannot pass as
// "any". The message names the tensor: "shape mismatch: wq_a.weight: expected (1024, 4096), got
// (1024, 4095)".
template <class T, std::size_t Rank>
status check_shape(const tensor_view<T, Rank>& v, const extents_t<Rank>& expected, std::string_view name) {
  std::int64_t elements = 1;
  for (std::size_t i = 0; i < Rank; ++i) {
    if (v.extent(i) < 0)
      return {errc::shape_mismatch,
              std::string(name) + ": negative extent in " + shape_string<Rank>(v.extents())};
    if (!checked_mul(elements, v.extent(i), elements) ||
        elements > INT64_MAX / static_cast<std::int64_t>(sizeof(T)))
      return {errc::out_of_range, std::string(name) + ": " + shape_string<Rank>(v.extents()) +
                                      " elements do not fit in 64 bits of bytes"};
  }
  for (std::size_t i = 0; i < Rank; ++i) {
    if (expected[i] >= 0 && v.extent(i) != expected[i]) {
      return {errc::shape_mismatch, std::string(name) + ": expected " + shape_string<Rank>(expected) +
                                        ", got " + shape_string<Rank>(v.extents())};
    }
  }
  return {};
}

// The bytes [first, last) a view's elements span (empty for an empty view).
template <class T, std::size_t Rank>
std::pair<const std::byte*, const std::byte*> byte_span(const tensor_view<T, Rank>& v) {
  if (v.empty() || v.data() == nullptr) return {nullptr, nullptr};
  index_t lo = 0, hi = 0;
  for (std::size_t i = 0; i < Rank; ++i) {
    const index_t reach = (v.extent(i) - 1) * v.stride(i);
    (reach < 0 ? lo : hi) += reach;
  }
  const auto* p = reinterpret_cast<const std::byte*>(v.data());
  return {p + lo * static_cast<index_t>(sizeof(T)), p + (hi + 1) * static_cast<index_t>(sizeof(T))};
}

// True when two byte_span results intersect (an empty span intersects nothing).
inline bool spans_intersect(std::pair<const std::byte*, const std::byte*> a,
                            std::pair<const std::byte*, const std::byte*> b) {
  return a.first != nullptr && b.first != nullptr && std::less<>{}(a.first, b.second) &&
         std::less<>{}(b.first, a.second);
}

// True when the byte ranges of a and b intersect: an output must not overlap an input or
// another output it does not own (checked before the first write).
template <class T, std::size_t RankT, class U, std::size_t RankU>
bool overlaps(const tensor_view<T, RankT>& a, const tensor_view<U, RankU>& b) {
  return spans_intersect(byte_span(a), byte_span(b));
}

// True when no two elements of v share an address: sorted by |stride|, each dimension of two or
// more elements steps past everything the smaller ones reach (a sufficient condition; a stride
// of 0 over two or more elements fails it). Several threads write an output at once, so an
// output must pass it.
template <class T, std::size_t Rank>
bool has_distinct_elements(const tensor_view<T, Rank>& v) {
  std::array<std::pair<index_t, index_t>, Rank> dims{};  // (|stride|, extent)
  std::size_t used = 0;
  for (std::size_t k = 0; k < Rank; ++k) {
    if (v.extent(k) == 0) return true;  // no element at all
    if (v.extent(k) > 1) dims[used++] = {v.stride(k) < 0 ? -v.stride(k) : v.stride(k), v.extent(k)};
  }
  for (std::size_t a = 1; a < used; ++a)  // insertion sort of at most Rank dimensions
    for (std::size_t b = a; b > 0 && dims[b].first < dims[b - 1].first; --b) std::swap(dims[b], dims[b - 1]);
  index_t reach = 1;  // elements spanned by the smaller dimensions
  for (std::size_t k = 0; k < used; ++k) {
    if (dims[k].first < reach) return false;
    if (!checked_mul(dims[k].first, dims[k].second, reach)) reach = INT64_MAX;
  }
  return true;
}

// Checks that a view is densely packed in row-major order (what vectorized kernels read).
template <class T, std::size_t Rank>
status check_contiguous(const tensor_view<T, Rank>& v, std::string_view name) {
  if (v.is_contiguous()) return {};
  return {errc::shape_mismatch, std::string(name) + ": expected a contiguous row-major view of shape " +
                                    shape_string<Rank>(v.extents())};
}

}  // namespace dsv4
