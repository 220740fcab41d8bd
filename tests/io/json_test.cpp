// io::parse_json, the reader of every JSON file that comes from outside: the nesting limit,
// repeated member names (with their place, also deep inside a large object, in both tree types),
// and syntax errors reported by byte offset without the input bytes.
#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include "dsv4/io/json.hpp"

using namespace dsv4;

namespace {

template <class Json>
std::string error_of(const std::string& text, int max_depth = 8) {
  Json j;
  const status s = io::parse_json(text, j, max_depth);
  if (s.ok()) return "ok";
  CHECK(s.code() == errc::io_error);
  CHECK(j.is_null());  // nothing half-built is left behind
  return s.message();
}

// {"outer": {"k0": 0, ..., "k<n-1>": n-1, <extra>}}
std::string big_object(int n, const std::string& extra) {
  std::string s = "{\"outer\": {";
  for (int i = 0; i < n; ++i) s += "\"k" + std::to_string(i) + "\": " + std::to_string(i) + ", ";
  return s + extra + "}}";
}

}  // namespace

TEMPLATE_TEST_CASE("json: a well-formed file is read whole", "[io]", nlohmann::json, nlohmann::ordered_json) {
  const auto j = io::parse_json<TestType>(R"({"b": [1, -2, 3.5, true, null, "x"], "a": {"c": "d"}})", 8);
  REQUIRE(j.ok());
  CHECK(j->at("b").size() == 6);
  CHECK(j->at("b")[1].template get<int>() == -2);
  CHECK(j->at("a").at("c") == "d");
  CHECK(io::parse_json<TestType>("7", 0).ok());
  CHECK(io::parse_json<TestType>(big_object(5000, "\"last\": 1"), 8).ok());
}

TEMPLATE_TEST_CASE("json: nesting is limited", "[io]", nlohmann::json, nlohmann::ordered_json) {
  // max_depth levels below the top value.
  CHECK(error_of<TestType>(std::string(9, '[') + std::string(9, ']')) == "ok");
  CHECK(error_of<TestType>(std::string(10, '[') + std::string(10, ']')) ==
        "JSON: nesting deeper than 8 levels");
  CHECK(error_of<TestType>(R"({"a": {"b": {"c": 1}}})", 1) == "JSON: nesting deeper than 1 levels");
  // Deep enough to exhaust a recursive parser's stack.
  CHECK(error_of<TestType>(std::string(1'000'000, '[')).find("nesting deeper") != std::string::npos);
  // Brackets inside strings do not count.
  CHECK(error_of<TestType>(R"({"a[[[[[[[[[[": "]]]]{{{{{{{{{{\"["})", 1) == "ok");
}

TEMPLATE_TEST_CASE("json: repeated member names are refused with their place", "[io]", nlohmann::json,
                   nlohmann::ordered_json) {
  CHECK(error_of<TestType>(R"({"a": 1, "a": 2})") == "JSON: repeated member name \"a\"");
  CHECK(error_of<TestType>(R"({"a": 1, "b": {"a": 2}})") == "ok");  // other objects are others
  CHECK(error_of<TestType>(R"({"x": [0, {"y": {"k": 1, "k": 2}}]})") ==
        "JSON: x[1].y: repeated member name \"k\"");
  // Deep inside an object of 20,000 members, at the end and near the start.
  CHECK(error_of<TestType>(big_object(20000, "\"k19999\": 0")) ==
        "JSON: outer: repeated member name \"k19999\"");
  CHECK(error_of<TestType>(big_object(20000, "\"k3\": 0")) == "JSON: outer: repeated member name \"k3\"");
  // A long name is cut in the message.
  const std::string name(100, 'n');
  const std::string msg = error_of<TestType>("{\"" + name + "\": 1, \"" + name + "\": 2}");
  CHECK(msg == "JSON: repeated member name \"" + name.substr(0, 64) + "...\"");
}

TEMPLATE_TEST_CASE("json: syntax errors give the byte offset, never the input", "[io]", nlohmann::json,
                   nlohmann::ordered_json) {
  CHECK(error_of<TestType>(R"({"a": tru})") ==
        "JSON at byte 10: syntax error while parsing value - invalid literal");
  for (const char* text : {"", "{", "[1, 2", "{\"a\": 1,}", "{\"a\": \"\\x\"}", "\"\\ud800\"", "{\"a\": 01}",
                           "{\"a\": 1} x", "nul", "{\"secret\" 1}"}) {
    INFO(text);
    const std::string msg = error_of<TestType>(text);
    CHECK(msg.starts_with("JSON at byte "));
    CHECK(msg.find("last read") == std::string::npos);
    CHECK(msg.find("secret") == std::string::npos);
  }
  CHECK(error_of<TestType>("{\"a\": \"\xff\"}").find("UTF-8") != std::string::npos);
  CHECK(error_of<TestType>("{\"a\": \"\x01\"}").find("control character") != std::string::npos);
}
