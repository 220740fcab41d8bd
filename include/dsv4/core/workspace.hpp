// Caller workspaces: one layout function serves both the size query and the carving.
//
// An operation that needs scratch memory describes its buffers once, as a sequence of take<T>(n)
// calls on a workspace_layout. Run over a null base it only adds up the bytes (the size query the
// engine calls once); run over the engine's memory it hands out the same buffers in the same
// order. Every buffer starts on a 64-byte line. A negative count (from a bad view, which the
// operation rejects anyway) takes nothing; a size past the address space saturates the total at
// SIZE_MAX, so that no workspace passes check_workspace.
//
// workspace_buffer is memory for such a workspace when the caller has none of its own: an aligned
// block that grows on request, for programs and convenience loops (an engine carves its own).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>

#include "dsv4/core/status.hpp"

namespace dsv4 {

inline constexpr std::size_t workspace_align = 64;

struct workspace_layout {
  std::byte* base = nullptr;  // null: size query only
  std::size_t used = 0;       // bytes taken so far, each buffer rounded up to workspace_align

  template <class T>
  T* take(std::int64_t count) {
    const auto c = static_cast<std::size_t>(std::max<std::int64_t>(count, 0));
    std::size_t bytes = 0, end = 0;
    if (__builtin_mul_overflow(c, sizeof(T), &bytes) ||
        __builtin_add_overflow(bytes, workspace_align - 1, &bytes) ||
        __builtin_add_overflow(used, bytes / workspace_align * workspace_align, &end)) {
      used = SIZE_MAX;
      return nullptr;
    }
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used = end;
    return p;
  }
  template <class T>
  std::span<T> take_span(std::int64_t count) {
    T* p = take<T>(count);
    return {p, p ? static_cast<std::size_t>(std::max<std::int64_t>(count, 0)) : 0};
  }
};

// ok when ws holds `need` bytes aligned to workspace_align (SIZE_MAX: a size that overflowed).
inline status check_workspace(std::span<std::byte> ws, std::size_t need) {
  if (need == SIZE_MAX)
    return {errc::out_of_range, "workspace: the size it would need does not fit in memory"};
  if (ws.size() >= need && reinterpret_cast<std::uintptr_t>(ws.data()) % workspace_align == 0) return {};
  return {errc::out_of_range, "workspace: expected at least " + std::to_string(need) + " bytes aligned to " +
                                  std::to_string(workspace_align) + ", got " + std::to_string(ws.size())};
}

// Owned workspace memory aligned to workspace_align. get(bytes) grows the block when it is
// smaller (the old contents are not kept) and returns its first `bytes` bytes. It never throws: an
// allocation that fails, or a size of SIZE_MAX (an overflowed layout), gives an empty span, which
// the operation handed it then refuses through check_workspace with the size it needed.
class workspace_buffer {
 public:
  workspace_buffer() = default;
  explicit workspace_buffer(std::size_t bytes) { (void)get(bytes); }

  std::span<std::byte> get(std::size_t bytes) noexcept {
    if (bytes > capacity_) {
      block_.reset();
      capacity_ = 0;
      if (bytes == SIZE_MAX) return {};
      block_.reset(
          static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{workspace_align}, std::nothrow)));
      if (!block_) return {};
      capacity_ = bytes;
    }
    return {block_.get(), bytes};
  }
  // The whole block.
  std::span<std::byte> span() const noexcept { return {block_.get(), capacity_}; }
  std::size_t size() const noexcept { return capacity_; }

 private:
  struct aligned_delete {
    void operator()(std::byte* p) const noexcept {
      ::operator delete[](p, std::align_val_t{workspace_align});
    }
  };
  std::unique_ptr<std::byte[], aligned_delete> block_;
  std::size_t capacity_ = 0;
};

}  // namespace dsv4
