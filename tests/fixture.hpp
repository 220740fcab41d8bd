// Golden fixtures for the tests, and the error measures the tests compare with.
//
// A fixture is a JSON file under tests/fixtures/ written by a script in tests/reference/ from an
// independent implementation (the Hugging Face transformers DeepseekV4 modules). Layout:
//   {"meta": {...}, "tensors": {"<name>": {"shape": [d0, d1, ...], "data": [row-major floats]}}}
// Floats are written with 9 significant digits, so they read back as the exact float32 values.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace dsv4::test {

struct fixture_tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // row-major
};

class fixture {
 public:
  // Loads tests/fixtures/<name>; throws with the path in the message when it is missing.
  static fixture load(const std::string& name) {
    const std::string path = std::string(DSV4_FIXTURE_DIR) + "/" + name;
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open fixture " + path);
    fixture f;
    f.json_ = nlohmann::json::parse(in);
    return f;
  }

  const nlohmann::json& meta() const { return json_.at("meta"); }

  fixture_tensor tensor(const std::string& name) const {
    const auto& t = json_.at("tensors").at(name);
    fixture_tensor out{t.at("shape").get<std::vector<std::int64_t>>(),
                       t.at("data").get<std::vector<float>>()};
    std::int64_t n = 1;
    for (auto e : out.shape) n *= e;
    if (n != static_cast<std::int64_t>(out.data.size()))
      throw std::runtime_error("fixture tensor " + name + ": shape and data disagree");
    return out;
  }

 private:
  nlohmann::json json_;
};

// ||a - b|| / ||b||: the relative L2 error of a against the reference b (b must not be all zeros).
inline double rel_l2(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return den > 0 ? std::sqrt(num / den) : INFINITY;
}

// How closely BF16 results `got` agree with a reference of the released numerics, in rows of
// width d: the share of bit-identical elements, the largest difference in BF16 ulps of its row's
// largest reference element (near-zero elements have tiny ulps of their own), the relative L2
// error, and whether every result is a BF16 value.
struct bf16_agreement {
  double identical = 0, worst_row_ulps = 0, rel_l2 = 0;
  bool all_bf16 = true;
};
inline bf16_agreement compare_bf16_rows(std::span<const float> got, std::span<const float> ref,
                                        std::size_t d) {
  bf16_agreement a;
  if (got.size() != ref.size() || d == 0 || ref.size() % d != 0) return {0, INFINITY, INFINITY, false};
  std::size_t equal = 0;
  for (std::size_t row = 0; row < ref.size() / d; ++row) {
    float row_max = 0;
    for (std::size_t c = 0; c < d; ++c) row_max = std::max(row_max, std::fabs(ref[row * d + c]));
    const float ulp = std::ldexp(1.0f, std::ilogb(row_max) - 7);  // a BF16 ulp at the row's scale
    for (std::size_t c = 0; c < d; ++c) {
      const std::size_t i = row * d + c;
      std::uint32_t bits = 0;
      std::memcpy(&bits, &got[i], sizeof bits);
      a.all_bf16 = a.all_bf16 && (bits & 0xffffu) == 0;
      equal += got[i] == ref[i] ? 1 : 0;
      a.worst_row_ulps = std::max(a.worst_row_ulps, std::fabs(double(got[i]) - ref[i]) / ulp);
    }
  }
  a.identical = static_cast<double>(equal) / static_cast<double>(ref.size());
  a.rel_l2 = rel_l2(got, ref);
  return a;
}

}  // namespace dsv4::test
