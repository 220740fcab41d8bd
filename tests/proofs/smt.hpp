// The integer type the proofs instantiate the index functions of core/index_math.hpp with: a Z3
// integer term (mathematical integers, SMT-LIB Int sort) that records, as it is built, what C++
// needs for the term to mean the same thing in the kernels (the obligations):
//   a / b and a % b   a >= 0 and b > 0: there C++'s truncating division and the solver's
//                     Euclidean div and mod agree (they differ for negative operands);
//   a + b, a - b, a * b  the result is representable in the kernel's integer type (int64, or
//                     uint64 where a kernel calls the function with unsigned arguments).
// Each proof checks the obligations of its terms under the same premises as its claim, so a
// proved property holds for the C++ arithmetic, not only for the integers. Int rather than 64-bit
// vectors: the index terms are linear or nearly so, which the arithmetic solver decides in
// milliseconds, where bit-blasted 64-bit divisions take minutes.
//
// A comparison gives a `cond` (a Z3 Boolean), which converts to nothing: a symbolic comparison in
// an `if` or `?:` does not compile, so an index function branches only through select.
#pragma once

#include <z3++.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace dsv4::proofs {

enum class domain { int64, uint64 };

struct environment {
  z3::context ctx;
  std::vector<z3::expr> obligations;
  std::vector<std::pair<z3::expr, z3::expr>> products;  // (factor, multiplicand) of a * b and of a / b
  domain range = domain::int64;
};
inline environment& env() {
  static environment e;
  return e;
}

struct cond {
  z3::expr e;
  friend cond operator&&(const cond& a, const cond& b) { return {a.e && b.e}; }
  friend cond operator||(const cond& a, const cond& b) { return {a.e || b.e}; }
  friend cond operator!(const cond& a) { return {!a.e}; }
  friend cond operator==(const cond& a, const cond& b) { return {a.e == b.e}; }  // iff
  friend cond implies(const cond& a, const cond& b) { return {z3::implies(a.e, b.e)}; }
};

class sym {
 public:
  sym(z3::expr e) : e_(std::move(e)) {}                                    // NOLINT
  sym(std::int64_t v) : e_(env().ctx.int_val(static_cast<int64_t>(v))) {}  // NOLINT
  sym(int v) : sym(static_cast<std::int64_t>(v)) {}                        // NOLINT
  static sym var(const std::string& name) { return sym(env().ctx.int_const(name.c_str())); }
  const z3::expr& expr() const { return e_; }

  friend sym operator+(const sym& a, const sym& b) { return representable(a.e_ + b.e_); }
  friend sym operator-(const sym& a, const sym& b) { return representable(a.e_ - b.e_); }
  friend sym operator*(const sym& a, const sym& b) {
    env().products.emplace_back(a.e_, b.e_);
    env().products.emplace_back(b.e_, a.e_);
    return representable(a.e_ * b.e_);
  }
  friend sym operator/(const sym& a, const sym& b) {
    env().obligations.push_back(a.e_ >= 0 && b.e_ > 0);
    env().products.emplace_back(b.e_, a.e_ / b.e_);  // the solver's a = b * (a div b) + (a mod b)
    return sym(a.e_ / b.e_);
  }
  friend sym operator%(const sym& a, const sym& b) {
    env().obligations.push_back(a.e_ >= 0 && b.e_ > 0);
    env().products.emplace_back(b.e_, a.e_ / b.e_);
    return sym(z3::mod(a.e_, b.e_));
  }
  friend cond operator<(const sym& a, const sym& b) { return {a.e_ < b.e_}; }
  friend cond operator<=(const sym& a, const sym& b) { return {a.e_ <= b.e_}; }
  friend cond operator>(const sym& a, const sym& b) { return {a.e_ > b.e_}; }
  friend cond operator>=(const sym& a, const sym& b) { return {a.e_ >= b.e_}; }
  friend cond operator==(const sym& a, const sym& b) { return {a.e_ == b.e_}; }
  friend cond operator!=(const sym& a, const sym& b) { return {a.e_ != b.e_}; }
  // index_math::select with a symbolic condition (found by argument-dependent lookup).
  friend sym select(const cond& c, const sym& a, const sym& b) { return sym(z3::ite(c.e, a.e_, b.e_)); }

 private:
  static sym representable(z3::expr r) {
    environment& en = env();
    const z3::expr lo = en.range == domain::int64 ? en.ctx.int_val(INT64_MIN) : en.ctx.int_val(0);
    const z3::expr hi = en.range == domain::int64 ? en.ctx.int_val(INT64_MAX) : en.ctx.int_val(UINT64_MAX);
    en.obligations.push_back(r >= lo && r <= hi);
    return sym(std::move(r));
  }
  z3::expr e_;
};

inline cond truth() { return {env().ctx.bool_val(true)}; }
// a <= x < b
inline cond in_range(const sym& x, const sym& a, const sym& b) { return a <= x && x < b; }

// A block table: an uninterpreted function from table slots to pages (any table at all; the
// premises say which entries lie in the pool and which are distinct).
struct table {
  z3::func_decl f;
  explicit table(const std::string& name)
      : f(env().ctx.function(name.c_str(), env().ctx.int_sort(), env().ctx.int_sort())) {}
  sym operator[](const sym& slot) const { return sym(f(slot.expr())); }
};

// The verdict of one proof: proved, or the counterexample the solver found.
struct verdict {
  bool proved = false;
  bool unknown = false;
  std::string counterexample;
  double seconds = 0.0;
};

// The one fact of nonlinear arithmetic the proofs lean on: multiplying by a positive factor is
// monotone (r x >= r y + r when x >= y + 1, r x <= r y when x <= y). Z3 proves it for all integers
// (the lemma's own test), but does not find it inside a larger nonlinear problem by itself, so
// prove() adds its instances for every two products of the terms with a common factor.
inline cond monotone_product(const z3::expr& r, const z3::expr& x, const z3::expr& y) {
  return {z3::implies(r > 0 && x >= y + 1, r * x >= r * y + r) &&
          z3::implies(r > 0 && x <= y, r * x <= r * y)};
}

// Starts a proof: forgets the obligations and products of earlier terms.
inline void begin(domain range = domain::int64) {
  env().obligations.clear();
  env().products.clear();
  env().range = range;
}

// Proves premises => claim and premises => every obligation recorded since begin(), for all
// values of the free variables. Prints `proved` or the counterexample.
inline verdict prove(const std::string& name, const cond& premises, const cond& claim,
                     unsigned timeout_ms = 20000) {
  const auto t0 = std::chrono::steady_clock::now();
  environment& en = env();
  z3::expr obligations = en.ctx.bool_val(true);
  for (const z3::expr& o : en.obligations) obligations = obligations && o;
  verdict v;
  z3::solver s(en.ctx);
  z3::params p(en.ctx);
  p.set("timeout", timeout_ms);
  s.set(p);
  s.add(premises.e);
  const auto& pr = en.products;
  for (std::size_t i = 0; i < pr.size(); ++i)
    for (std::size_t j = 0; j < pr.size(); ++j)
      if (i != j && z3::eq(pr[i].first, pr[j].first) && !pr[i].first.is_numeral())
        s.add(monotone_product(pr[i].first, pr[i].second, pr[j].second).e);
  s.add(!(claim.e && obligations));
  switch (s.check()) {
    case z3::unsat:
      v.proved = true;
      break;
    case z3::sat: {
      const z3::model m = s.get_model();
      for (unsigned i = 0; i < m.size(); ++i) {
        const z3::func_decl d = m[i];
        // Appended piece by piece (GCC 12's -Wrestrict misreads `"literal" + std::string` at -O3).
        v.counterexample.append(" ").append(d.name().str()).append(" = ");
        if (d.arity() == 0) {
          v.counterexample.append(m.get_const_interp(d).to_string());
        } else {
          v.counterexample.append(m.get_func_interp(d).else_value().to_string()).append(" (else)");
        }
      }
      if (m.eval(obligations, true).is_false()) v.counterexample += "  [an obligation fails]";
      break;
    }
    case z3::unknown:
      v.unknown = true;
      v.counterexample = std::string(" unknown: ").append(s.reason_unknown());
      break;
  }
  v.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << name << ": "
            << (v.proved ? std::string("proved") : std::string("counterexample:").append(v.counterexample))
            << " (" << v.seconds << " s)\n";
  return v;
}

}  // namespace dsv4::proofs
