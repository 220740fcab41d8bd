// Counting heap allocations in tests: tests/catch_main.cpp replaces the global operator new of
// every host test executable with one that counts (every thread's calls, OpenMP's included).
#pragma once

#include <cstdint>

namespace dsv4::test {

// operator new calls since the program started.
std::int64_t allocations();

// While one lives, operator new on the thread that made it fails (std::bad_alloc, or null from the
// nothrow forms): for the paths that must survive running out of memory.
class refuse_allocations {
 public:
  refuse_allocations();
  ~refuse_allocations();
  refuse_allocations(const refuse_allocations&) = delete;
  refuse_allocations& operator=(const refuse_allocations&) = delete;

 private:
  bool previous_;
};

// operator new calls made while f() ran. Keep Catch2's assertions outside f: they allocate.
template <class F>
std::int64_t allocations_during(F&& f) {
  const std::int64_t before = allocations();
  f();
  return allocations() - before;
}

}  // namespace dsv4::test
