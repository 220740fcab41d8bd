// workspace_layout carving and workspace_buffer: the memory a caller without its own hands to ws.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>

#include "dsv4/core/workspace.hpp"

using namespace dsv4;

TEST_CASE("workspace_buffer: aligned, grows on request, keeps a larger block", "[core][workspace]") {
  workspace_buffer b;
  CHECK(b.size() == 0);
  CHECK(check_workspace(b.get(0), 0).ok());
  const auto aligned = [](std::span<std::byte> s) {
    return reinterpret_cast<std::uintptr_t>(s.data()) % workspace_align == 0;
  };
  const std::span<std::byte> a = b.get(100);
  CHECK(a.size() == 100);
  CHECK(aligned(a));
  CHECK(check_workspace(a, 100).ok());
  a[99] = std::byte{7};                          // the memory is there
  const std::span<std::byte> small = b.get(10);  // smaller: the same block
  CHECK(small.data() == a.data());
  CHECK(small.size() == 10);
  CHECK(b.size() == 100);
  const std::span<std::byte> big = b.get(1 << 20);
  CHECK(big.size() == std::size_t{1} << 20);
  CHECK(aligned(big));
  CHECK(b.span().size() == std::size_t{1} << 20);

  // A layout over it hands out the buffers the size query counted.
  workspace_layout size_only;
  size_only.take<float>(3);
  size_only.take<double>(5);
  workspace_buffer c(size_only.used);
  workspace_layout carve{c.span().data()};
  CHECK(carve.take<float>(3) == reinterpret_cast<float*>(c.span().data()));
  CHECK(carve.take<double>(5) == reinterpret_cast<double*>(c.span().data() + workspace_align));
  CHECK(carve.used == size_only.used);
}

TEST_CASE("workspace_buffer: an overflowed size gives an empty span that check_workspace refuses",
          "[core][workspace]") {
  workspace_buffer b(64);
  CHECK(b.get(SIZE_MAX).empty());
  CHECK(b.size() == 0);
  CHECK_FALSE(check_workspace(b.get(SIZE_MAX), SIZE_MAX).ok());
  CHECK(b.get(64).size() == 64);  // and it recovers
}
