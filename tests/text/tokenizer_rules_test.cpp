// dsv4::text::tokenizer on a tiny hand-made tokenizer.json: BPE merge order, added-token
// matching (leftmost-longest, normalized=false tokens first), Split behaviours, and every kind of
// malformed or hostile file, each refused with a status that names the problem.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "dsv4/text/tokenizer.hpp"
#include "text/text_fixtures.hpp"

namespace {

using dsv4::errc;
using dsv4::text::token_id;
using dsv4::text::tokenizer;
using nlohmann::json;

std::string level_char(unsigned b) {
  const std::uint32_t cp = dsv4::text::utf8::byte_level_chars[b];
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// Bytes are ids 0..255 (id = byte value); then aa 256, aaa 257, bc 258, abc 259.
// Added: "<s>" 260 (special), "<s>x" 261, "a<s" 262 (normalized = true).
json tiny() {
  json vocab = json::object();
  for (unsigned b = 0; b < 256; ++b) vocab[level_char(b)] = b;
  vocab["aa"] = 256;
  vocab["aaa"] = 257;
  vocab["bc"] = 258;
  vocab["abc"] = 259;
  json added = json::array();
  auto add = [&](int id, const char* content, bool special, bool normalized) {
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", normalized},
                     {"special", special}});
  };
  add(260, "<s>", true, false);
  add(261, "<s>x", false, false);
  add(262, "a<s", false, true);
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array()}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Split"},
                                            {"pattern", {{"Regex", " ?[a-z]+"}}},
                                            {"behavior", "Isolated"},
                                            {"invert", false}},
                                           {{"type", "ByteLevel"},
                                            {"add_prefix_space", false},
                                            {"trim_offsets", true},
                                            {"use_regex", false}}})}}},
          {"post_processor", nullptr},
          {"decoder",
           {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"byte_fallback", false},
            {"vocab", vocab},
            {"merges", json::array({"a a", "aa a", "b c", "a bc"})}}}};
}

tokenizer load(const json& j) {
  auto t = tokenizer::from_json(j.dump());
  if (!t.ok()) FAIL(t.error().to_string());
  return std::move(t).value();
}

std::vector<token_id> ids(const tokenizer& t, std::string_view s) {
  auto r = t.encode(s);
  if (!r.ok()) FAIL(r.error().to_string());
  return *r;
}

// Loads `j` and expects failure with `code` and `fragment` in the message.
void expect_refused(const json& j, errc code, const std::string& fragment) {
  const auto t = tokenizer::from_json(j.dump());
  REQUIRE_FALSE(t.ok());
  INFO(t.error().to_string());
  CHECK(t.error().code() == code);
  CHECK(t.error().message().find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("tokenizer rules: BPE applies the lowest-ranked merge, leftmost first", "[text]") {
  const tokenizer t = load(tiny());
  CHECK(t.vocab_size() == 263);
  CHECK(ids(t, "a") == std::vector<token_id>{'a'});
  CHECK(ids(t, "aa") == std::vector<token_id>{256});
  CHECK(ids(t, "aaa") == std::vector<token_id>{257});        // aa+a, not a+aa
  CHECK(ids(t, "aaaa") == std::vector<token_id>{256, 256});  // (a a) at 0, then at 2; no aa+aa
  CHECK(ids(t, "aaaaa") == std::vector<token_id>{256, 257});
  CHECK(ids(t, "abc") == std::vector<token_id>{259});  // b+c (rank 2), then a+bc (rank 3)
  CHECK(ids(t, "aabc") == std::vector<token_id>{256, 258});
  // The Split pattern isolates " ?[a-z]+"; the rest ("1", "  ") is a piece of its own.
  CHECK(ids(t, "aa1aa") == std::vector<token_id>{256, '1', 256});
  CHECK(ids(t, "aa aa") == std::vector<token_id>{256, ' ', 256});  // " aa": no merge has the space
}

TEST_CASE("tokenizer rules: added tokens are matched leftmost-longest, normalized=false first", "[text]") {
  const tokenizer t = load(tiny());
  CHECK(ids(t, "<s>") == std::vector<token_id>{260});
  CHECK(ids(t, "<s>x") == std::vector<token_id>{261});  // the longer of the two at the same place
  CHECK(ids(t, "b<s>xaa") == std::vector<token_id>{'b', 261, 256});
  // "a<s" (normalized) would start further left, but the normalized=false tokens are cut first.
  CHECK(ids(t, "a<s>") == std::vector<token_id>{'a', 260});
  CHECK(ids(t, "a<sz") == std::vector<token_id>{262, 'z'});
  dsv4::text::decode_options skip;
  skip.skip_special_tokens = true;
  const std::vector<token_id> mixed{260, 'a', 261};
  auto all = t.decode(mixed);
  auto some = t.decode(mixed, skip);
  REQUIRE((all.ok() && some.ok()));
  CHECK(*all == "<s>a<s>x");
  CHECK(*some == "a<s>x");  // <s>x is added but not special
}

TEST_CASE("tokenizer rules: Split with behavior Removed drops the matches", "[text]") {
  json j = tiny();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}};
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  const tokenizer t = load(j);
  CHECK(ids(t, "aa aa") == std::vector<token_id>{256, 256});
  CHECK(ids(t, "a  a") == std::vector<token_id>{'a', 'a'});  // a literal pattern: no merge across
}

TEST_CASE("tokenizer rules: ByteLevel use_regex adds the GPT-2 split", "[text]") {
  json j = tiny();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const tokenizer t = load(j);
  CHECK(t.pre_tokenizer_steps() == 1);
  CHECK(ids(t, "aa's") == std::vector<token_id>{256, '\'', 's'});
}

TEST_CASE("tokenizer rules: malformed files are refused with a status naming the problem", "[text]") {
  SECTION("not JSON") {
    for (const char* text : {"", "{", "[1, 2", "{\"a\": tru}", "{\"a\": 1,}", "{\"a\": \"\\x\"}",
                             "\"\\ud800\"", "{\"a\": 01}", "{\"a\": 1} x", "nul"}) {
      const auto t = tokenizer::from_json(text);
      REQUIRE_FALSE(t.ok());
      INFO(text << " -> " << t.error().to_string());
      CHECK(t.error().code() == errc::io_error);
      CHECK(t.error().message().find("JSON at byte") != std::string::npos);
    }
  }
  SECTION("invalid UTF-8 and control characters in strings") {
    CHECK(tokenizer::from_json("{\"a\": \"\xff\"}").error().message().find("UTF-8") != std::string::npos);
    CHECK(tokenizer::from_json("{\"a\": \"\x01\"}").error().message().find("control character") !=
          std::string::npos);
  }
  SECTION("nesting deep enough to exhaust a naive parser's stack") {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    const auto t = tokenizer::from_json(deep);
    REQUIRE_FALSE(t.ok());
    CHECK(t.error().message().find("nesting") != std::string::npos);
    // 64 levels below the top one are allowed (then the top level is not an object).
    const auto ok_depth = tokenizer::from_json(std::string(65, '[') + std::string(65, ']'));
    REQUIRE_FALSE(ok_depth.ok());
    CHECK(ok_depth.error().message().find("expected an object at the top level") != std::string::npos);
    const auto too_deep = tokenizer::from_json(std::string(66, '[') + std::string(66, ']'));
    REQUIRE_FALSE(too_deep.ok());
    CHECK(too_deep.error().message().find("nesting deeper than 64") != std::string::npos);
  }
  SECTION("repeated member names") {
    const auto t = tokenizer::from_json("{\"model\": 1, \"model\": 2}");
    REQUIRE_FALSE(t.ok());
    CHECK(t.error().message().find("repeated member name \"model\"") != std::string::npos);
    // Deeper down, in an object of 261 members: the message says where.
    std::string text = tiny().dump();
    const std::size_t at = text.find("\"vocab\":{");
    REQUIRE(at != std::string::npos);
    text.insert(at + 9, "\"aa\":256,");
    const auto v = tokenizer::from_json(text);
    REQUIRE_FALSE(v.ok());
    INFO(v.error().to_string());
    CHECK(v.error().message().find("model.vocab: repeated member name \"aa\"") != std::string::npos);
  }
  SECTION("top level and missing sections") {
    expect_refused(json::array(), errc::io_error, "expected an object");
    json j = tiny();
    j.erase("model");
    expect_refused(j, errc::io_error, "model: missing");
    j = tiny();
    j["model"].erase("vocab");
    expect_refused(j, errc::io_error, "model.vocab: missing");
    j = tiny();
    j["model"].erase("merges");
    expect_refused(j, errc::io_error, "model.merges: missing");
    j = tiny();
    j.erase("pre_tokenizer");
    expect_refused(j, errc::unsupported, "pre_tokenizer: missing");
    j = tiny();
    j.erase("decoder");
    expect_refused(j, errc::unsupported, "decoder: missing");
  }
  SECTION("unsupported features") {
    json j = tiny();
    j["model"]["type"] = "WordPiece";
    expect_refused(j, errc::unsupported, "model.type: \"WordPiece\"");
    j = tiny();
    j["model"]["dropout"] = 0.1;
    expect_refused(j, errc::unsupported, "dropout");
    j = tiny();
    j["normalizer"] = {{"type", "NFC"}};
    expect_refused(j, errc::unsupported, "normalizer: type \"NFC\"");
    j = tiny();
    j["decoder"] = {{"type", "WordPiece"}};
    expect_refused(j, errc::unsupported, "decoder: type \"WordPiece\"");
    j = tiny();
    j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithNext";
    expect_refused(j, errc::unsupported, "behavior \"MergedWithNext\"");
    j = tiny();
    j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true;
    expect_refused(j, errc::unsupported, "add_prefix_space");
    j = tiny();
    j["pre_tokenizer"]["pretokenizers"].erase(1);
    expect_refused(j, errc::unsupported, "no ByteLevel step");
    j = tiny();
    j["added_tokens"][0]["lstrip"] = true;
    expect_refused(j, errc::unsupported, "added_tokens[0] \"<s>\": lstrip");
  }
  SECTION("a pattern PCRE2 cannot compile") {
    json j = tiny();
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "([a-z]";
    expect_refused(j, errc::invalid_argument, "pre_tokenizer[0]: pattern \"([a-z]\"");
  }
  SECTION("vocabulary ids") {
    json j = tiny();
    j["model"]["vocab"]["zz"] = 256;
    expect_refused(j, errc::io_error, "id 256 is given to both");
    for (const json& bad : {json(-1), json(1e9), json(2.5), json("7"), json(nullptr)}) {
      j = tiny();
      j["model"]["vocab"]["zz"] = bad;
      expect_refused(j, errc::out_of_range, "model.vocab[\"zz\"]: id must be an integer");
    }
    j = tiny();
    j["model"]["vocab"].erase(level_char(0x20));
    expect_refused(j, errc::io_error, "no token for byte 0x20");
  }
  SECTION("merges") {
    json j = tiny();
    j["model"]["merges"].push_back("a zz");
    expect_refused(j, errc::io_error, "model.merges[4]: \"zz\" is not in the vocabulary");
    j = tiny();
    j["model"]["merges"].push_back("b b");
    expect_refused(j, errc::io_error, "model.merges[4]: the merged token \"bb\" is not in the vocabulary");
    j = tiny();
    j["model"]["merges"].push_back("a b c");
    expect_refused(j, errc::io_error, "is not two tokens separated by one space");
    j = tiny();
    j["model"]["merges"].push_back(json::array({"a", 3}));
    expect_refused(j, errc::io_error, "model.merges[4]: expected");
    j = tiny();
    j["model"]["merges"].push_back("a a");
    expect_refused(j, errc::io_error, "model.merges[4]: the pair \"a a\" repeats");
    // The pair form of newer files is accepted.
    j = tiny();
    j["model"]["merges"] = json::array({json::array({"a", "a"}), json::array({"aa", "a"})});
    const tokenizer t = load(j);
    CHECK(ids(t, "aaa") == std::vector<token_id>{257});
  }
  SECTION("added tokens") {
    json j = tiny();
    j["added_tokens"][1]["id"] = 260;
    expect_refused(j, errc::io_error, "added_tokens[1]: id 260 is also \"<s>\"");
    j = tiny();
    j["added_tokens"][1]["content"] = "<s>";
    expect_refused(j, errc::io_error, "added_tokens[1]: \"<s>\" repeats added_tokens[0]");
    j = tiny();
    j["added_tokens"][0]["id"] = 97;
    expect_refused(j, errc::io_error, "added_tokens[0]: id 97 is \"a\" in the vocabulary");
    j = tiny();
    j["added_tokens"][0]["id"] = 100000000;
    expect_refused(j, errc::out_of_range, "added_tokens[0]: id must be an integer");
    j = tiny();
    j["added_tokens"][0]["content"] = "";
    expect_refused(j, errc::io_error, "empty \"content\"");
    j = tiny();
    j["added_tokens"][0]["special"] = "yes";
    expect_refused(j, errc::io_error, "added_tokens[0].special: expected true or false");
    j = tiny();
    j["added_tokens"][0]["content"] = "aa";  // spelled like vocabulary token 256, with another id
    expect_refused(j, errc::io_error, "\"aa\" has id 256 in the vocabulary");
  }
  SECTION("a missing file") {
    const auto t = tokenizer::from_file("no/such/dir/tokenizer.json");
    REQUIRE_FALSE(t.ok());
    CHECK(t.error().code() == errc::io_error);
    CHECK(t.error().message().find("no/such/dir/tokenizer.json") != std::string::npos);
  }
}

TEST_CASE("tokenizer rules: every truncation of a file is refused, none crashes", "[text]") {
  const std::string text = tiny().dump();
  int refused = 0;
  for (std::size_t n = 0; n < text.size(); ++n) {
    const auto t = tokenizer::from_json(std::string_view(text).substr(0, n));
    if (!t.ok()) ++refused;
  }
  CHECK(refused == static_cast<int>(text.size()));
  // A few cuts of the real file too (each parse reads up to 6 MB).
  const std::string real = dsv4::test::read_text_fixture("tokenizer.json");
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, real.size() / 3, real.size() - 2}) {
    CHECK_FALSE(tokenizer::from_json(std::string_view(real).substr(0, n)).ok());
  }
}

TEST_CASE("tokenizer rules: \\s means Unicode White_Space, as in Oniguruma", "[text]") {
  using dsv4::text::regex;
  CHECK(regex::with_unicode_spaces(R"(\s+(?!\S))") == R"(\p{White_Space}+(?!\P{White_Space}))");
  CHECK(regex::with_unicode_spaces(R"([^\s\p{L}]\\s)") ==
        R"([^\p{White_Space}\p{L}]\\s)");  // "\\" is a backslash
  CHECK(regex::with_unicode_spaces(R"(\Q\s\E\s)") == R"(\Q\s\E\p{White_Space})");
  CHECK(regex::with_unicode_spaces("a\\") == "a\\");
  // U+180E MONGOLIAN VOWEL SEPARATOR is not white space (PCRE2's Perl-style \s would say it is).
  json j = tiny();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";  // white space disappears
  const tokenizer t = load(j);
  CHECK(ids(t, " \xe1\xa0\x8e\xe2\x80\xa8").size() == 3);  // U+180E stays (3 bytes), U+2028 goes
  dsv4::text::regex re;
  REQUIRE(dsv4::text::regex::compile("\\s", false, re).ok());
  dsv4::text::regex::matcher m(re);
  std::size_t b = 0, e = 0;
  CHECK(m.find("\xe1\xa0\x8e", 3, 0, b, e) == 0);
  CHECK(m.find("\xe2\x80\xa8", 3, 0, b, e) == 1);  // U+2028 LINE SEPARATOR is
  CHECK(m.find("\xc2\x85", 2, 0, b, e) == 1);      // and U+0085 NEXT LINE
}
