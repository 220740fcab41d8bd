// A benchmark's setup (its weights, caches and models) must succeed before anything is timed:
// made() unwraps a result and must() checks a status; a failure says why and stops the run.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "dsv4/core/status.hpp"

namespace dsv4::bench {

template <class T>
T made(result<T> r) {
  if (!r.ok()) {
    std::fprintf(stderr, "benchmark setup: %s\n", r.error().to_string().c_str());
    std::abort();
  }
  return std::move(r).value();
}

inline void must(const status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "benchmark setup: %s: %s\n", what, s.to_string().c_str());
    std::abort();
  }
}

}  // namespace dsv4::bench
