// Golden fixtures for the tests, and the error measures the tests compare with.
//
// A fixture is a JSON file under tests/fixtures/ written by a script in tests/reference/ from an
// independent implementation (the Hugging Face transformers DeepseekV4 modules). Layout:
//   {"meta": {...}, "tensors": {"<name>": {"shape": [d0, d1, ...], "data": [row-major floats]}}}
// Floats are written with 9 significant digits, so they read back as the exact float32 values.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
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

}  // namespace dsv4::test
