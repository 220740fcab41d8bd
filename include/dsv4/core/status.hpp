// status and result<T>: how host functions of dsv4 report failure.
//
// No exception crosses the public API of an operation. A failed call returns a status whose
// message names the tensor, field or value at fault, and leaves every piece of state it was
// given as it was (callers validate before they mutate). result<T> carries a value or a status;
// it stands in for C++23 std::expected.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dsv4 {

enum class errc {
  ok = 0,
  invalid_argument,  // a value outside its domain (a token id past the vocabulary, a bad option)
  shape_mismatch,    // a tensor's rank, extents or strides differ from what the operation needs
  out_of_range,      // a position or index past a capacity
  invalid_state,     // the object is not in a state that allows the call (unknown sequence, ...)
  unsupported,       // a valid request this build or backend cannot serve
  io_error,          // a file could not be read or is malformed
  cuda_error,        // the CUDA runtime or a library reported an error
};

namespace detail {
// The name of each errc, indexed by its value (enumerators in declaration order, from ok = 0).
inline constexpr std::array<std::string_view, 8> errc_names{
    "ok",          "invalid argument", "shape mismatch", "out of range", "invalid state",
    "unsupported", "I/O error",        "CUDA error"};
static_assert(errc_names.size() == static_cast<std::size_t>(errc::cuda_error) + 1,
              "errc_names needs one entry per errc");
}  // namespace detail

constexpr std::string_view to_string(errc e) {
  const auto i = static_cast<std::size_t>(e);
  return i < detail::errc_names.size() ? detail::errc_names[i] : "unknown error";
}

class [[nodiscard]] status {
 public:
  status() = default;  // ok
  status(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  static status success() { return {}; }

  [[nodiscard]] bool ok() const noexcept { return code_ == errc::ok; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] errc code() const noexcept { return code_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  // "shape mismatch: wq_a.weight: expected (1024, 4096), got (1024, 4095)"
  [[nodiscard]] std::string to_string() const {
    return ok() ? std::string("ok") : std::string(dsv4::to_string(code_)) + ": " + message_;
  }

 private:
  errc code_ = errc::ok;
  std::string message_;
};

template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  result(status s) : v_(std::move(s)) {      // NOLINT(google-explicit-constructor)
    if (std::get<status>(v_).ok()) {
      v_ = status(errc::invalid_state, "result constructed from an ok status without a value");
    }
  }

  [[nodiscard]] bool ok() const noexcept { return std::holds_alternative<T>(v_); }
  explicit operator bool() const noexcept { return ok(); }
  // The status: ok() when a value is held.
  [[nodiscard]] status error() const { return ok() ? status{} : std::get<status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, status> v_;
};

}  // namespace dsv4
