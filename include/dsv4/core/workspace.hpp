// Caller workspaces: one layout function serves both the size query and the carving.
//
// An operation that needs scratch memory describes its buffers once, as a sequence of take<T>(n)
// calls on a workspace_layout. Run over a null base it only adds up the bytes (the size query the
// engine calls once); run over the engine's memory it hands out the same buffers in the same
// order. Every buffer starts on a 64-byte line. A negative count (from a bad view, which the
// operation rejects anyway) takes nothing; a size past the address space saturates the total at
// SIZE_MAX, so that no workspace passes check_workspace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
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

}  // namespace dsv4
