// dsv4::text::tokenizer on the DeepSeek-V4 tokenizer.json: ids against the Hugging Face
// `tokenizers` reference over the committed corpus, round trips, the invalid-UTF-8 rule, decoding,
// and hand-computed BPE cases on a tiny vocabulary.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dsv4/text/tokenizer.hpp"
#include "text/text_fixtures.hpp"

namespace {

using dsv4::text::token_id;
using dsv4::text::tokenizer;

const tokenizer& v4() {
  static const tokenizer t = [] {
    auto r = tokenizer::from_file(dsv4::test::text_fixture_path("tokenizer.json"));
    if (!r.ok()) FAIL("loading tokenizer.json: " << r.error().to_string());
    return std::move(r).value();
  }();
  return t;
}

// The first index where two id sequences differ, or -1.
long first_difference(const std::vector<token_id>& a, const std::vector<token_id>& b) {
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<long>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<long>(n);
}

}  // namespace

TEST_CASE("tokenizer: the V4 file loads with its documented sizes", "[text]") {
  const tokenizer& t = v4();
  CHECK(t.vocab_size() == 129280);
  CHECK(t.model_vocab_size() == 128000);
  CHECK(t.merge_count() == 127741);
  CHECK(t.added_token_count() == 1283);
  CHECK(t.pre_tokenizer_steps() == 3);  // three Splits; ByteLevel with use_regex = false adds none
  CHECK(t.jit());
  CHECK(t.token_to_id("<｜begin▁of▁sentence｜>") == 0);
  CHECK(t.token_to_id("<｜end▁of▁sentence｜>") == 1);
  CHECK(t.token_to_id("<think>") == 128821);
  CHECK(t.token_to_id("</think>") == 128822);
  CHECK(t.token_to_id("｜DSML｜") == 128825);
  CHECK(t.token_to_id("<｜latest_reminder｜>") == 128828);
  CHECK(t.is_special(0));
  CHECK_FALSE(t.is_special(128821));  // <think> is an added token, not a special one
  CHECK(t.is_added(128821));
  CHECK(t.id_to_token(19923) == std::string_view("Hello"));
  CHECK_FALSE(t.token_to_id("no such token").has_value());
}

TEST_CASE("tokenizer: ids equal the reference on the whole corpus", "[text]") {
  const tokenizer& t = v4();
  const std::string corpus = dsv4::test::read_text_fixture("corpus.txt");
  const auto docs = dsv4::test::read_id_documents("corpus.ids", corpus);
  REQUIRE(corpus.size() >= 200 * 1000);
  REQUIRE(docs.size() >= 30);
  dsv4::text::encode_state state;
  std::size_t tokens = 0;
  for (std::size_t d = 0; d < docs.size(); ++d) {
    std::vector<token_id> ids;
    const auto s = t.encode(docs[d].text, ids, state);
    REQUIRE(s.ok());
    const long at = first_difference(ids, docs[d].ids);
    INFO("document " << d << " (" << docs[d].text.size() << " bytes): first difference at token " << at);
    CHECK(at == -1);
    tokens += ids.size();
  }
  CHECK(tokens > 50000);
  // Without a state (a fresh cache per call) the ids are the same.
  for (std::size_t d = 0; d < docs.size(); d += 7) {
    auto ids = t.encode(docs[d].text);
    REQUIRE(ids.ok());
    CHECK(*ids == docs[d].ids);
  }
}

TEST_CASE("tokenizer: decode(encode(s)) == s for the valid corpus", "[text]") {
  const tokenizer& t = v4();
  const std::string corpus = dsv4::test::read_text_fixture("corpus.txt");
  const auto docs = dsv4::test::read_id_documents("corpus.ids", corpus);
  dsv4::text::encode_state state;
  for (std::size_t d = 0; d < docs.size(); ++d) {
    std::vector<token_id> ids;
    REQUIRE(t.encode(docs[d].text, ids, state).ok());
    auto back = t.decode(ids);
    REQUIRE(back.ok());
    INFO("document " << d);
    CHECK(*back == docs[d].text);
  }
  // The whole corpus as one text, too.
  std::vector<token_id> ids;
  REQUIRE(t.encode(corpus, ids, state).ok());
  auto back = t.decode(ids);
  REQUIRE(back.ok());
  CHECK(*back == corpus);
}

TEST_CASE("tokenizer: invalid UTF-8 runs are words of their own and round-trip as bytes", "[text]") {
  const tokenizer& t = v4();
  const std::string data = dsv4::test::read_text_fixture("invalid_utf8.bin");
  const auto docs = dsv4::test::read_id_documents("invalid_utf8.ids", data);
  REQUIRE(docs.size() >= 50);
  for (std::size_t d = 0; d < docs.size(); ++d) {
    INFO("document " << d);
    CHECK_FALSE(dsv4::text::utf8::is_valid(docs[d].text));
    auto ids = t.encode(docs[d].text);
    REQUIRE(ids.ok());
    CHECK(first_difference(*ids, docs[d].ids) == -1);
    std::string bytes;
    REQUIRE(t.decode_bytes(*ids, bytes).ok());
    CHECK(bytes == docs[d].text);
    // decode() never returns invalid UTF-8.
    auto text = t.decode(*ids);
    REQUIRE(text.ok());
    CHECK(dsv4::text::utf8::is_valid(*text));
  }
  // The rule spelled out: the run is cut out and the text around it encodes on its own.
  auto a = t.encode("hello");
  auto b = t.encode(" world");
  auto whole = t.encode(std::string("hello\xff\xfe world"));
  REQUIRE((a.ok() && b.ok() && whole.ok()));
  std::vector<token_id> expect = *a;
  expect.push_back(*t.token_to_id("\xc3\xbf"));  // 0xFF is spelled U+00FF; no merge joins FF FE
  expect.push_back(*t.token_to_id("\xc3\xbe"));
  expect.insert(expect.end(), b->begin(), b->end());
  CHECK(*whole == expect);
}

TEST_CASE("tokenizer: decoding matches the reference's rules", "[text]") {
  const tokenizer& t = v4();
  const auto cases = nlohmann::json::parse(dsv4::test::read_text_fixture("decode_cases.json"));
  REQUIRE(cases.size() >= 5);
  for (const auto& c : cases) {
    const auto ids = c.at("ids").get<std::vector<token_id>>();
    dsv4::text::decode_options opt;
    opt.skip_special_tokens = c.at("skip_special").get<bool>();
    auto text = t.decode(ids, opt);
    REQUIRE(text.ok());
    CHECK(*text == c.at("text").get<std::string>());
  }
  // An id past the vocabulary is an error that names it, and leaves the output as it was.
  std::string out = "kept";
  const std::vector<token_id> bad{19923, 129280};
  const auto s = t.decode_bytes(bad, out);
  CHECK(s.code() == dsv4::errc::out_of_range);
  CHECK(s.message().find("129280") != std::string::npos);
  CHECK(out == "kept");
  const std::vector<token_id> negative{-1};
  CHECK_FALSE(t.decode(negative).ok());
}

TEST_CASE("tokenizer: added tokens can be encoded as plain text", "[text]") {
  const tokenizer& t = v4();
  auto matched = t.encode("<｜User｜>hi");
  REQUIRE(matched.ok());
  REQUIRE(matched->size() == 2);
  CHECK((*matched)[0] == 128803);
  dsv4::text::encode_options plain;
  plain.match_added_tokens = false;
  auto as_text = t.encode("<｜User｜>hi", plain);
  REQUIRE(as_text.ok());
  CHECK(as_text->size() > 2);
  for (const token_id id : *as_text) CHECK_FALSE(t.is_added(id));
  auto back = t.decode(*as_text);
  REQUIRE(back.ok());
  CHECK(*back == "<｜User｜>hi");
}

TEST_CASE("tokenizer: encode appends, and an encode_state serves several tokenizers", "[text]") {
  const tokenizer& t = v4();
  std::vector<token_id> out{7};
  REQUIRE(t.encode("Hello", out).ok());
  CHECK(out == std::vector<token_id>{7, 19923});
  dsv4::text::encode_state state;
  std::vector<token_id> first, second;
  REQUIRE(t.encode("the cat and the dog", first, state).ok());
  CHECK(state.cached_words() > 0);
  REQUIRE(t.encode("the cat and the dog", second, state).ok());
  CHECK(first == second);
  const tokenizer copy = t;  // copies share their tables
  std::vector<token_id> third;
  REQUIRE(copy.encode("the cat and the dog", third, state).ok());
  CHECK(third == first);
  // An empty text gives no ids.
  auto none = t.encode("");
  REQUIRE(none.ok());
  CHECK(none->empty());
  // A default-constructed tokenizer refuses politely.
  const tokenizer empty;
  std::vector<token_id> ids;
  CHECK(empty.encode("x", ids).code() == dsv4::errc::invalid_state);
}

TEST_CASE("tokenizer: random bytes, with pieces of added tokens and characters, round-trip", "[text]") {
  const tokenizer& t = v4();
  const std::vector<std::string> pieces{
      "<｜User｜>",       "<｜Us",        "｜>",  "<think>", "</think", "\xe4\xb8\xad", "\xe4", "\xb8",
      "\xf0\x9f\x98\x80", "\xf0\x9f",     " ",    "  ",      "\n",      "\r\n",         "123",  "abc",
      "\xc3\xa9",         "\xed\xa0\x80", "\xff", "\x00",    "\xc2\x85"};
  std::mt19937 rng(20240424);
  dsv4::text::encode_state state;
  for (int round = 0; round < 2000; ++round) {
    std::string s;
    const int n = static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 == 0) {
        s.push_back(static_cast<char>(rng() % 256));
      } else {
        s += pieces[rng() % pieces.size()];
      }
    }
    std::vector<token_id> ids;
    REQUIRE(t.encode(s, ids, state).ok());
    std::string back;
    REQUIRE(t.decode_bytes(ids, back).ok());
    INFO("round " << round);
    CHECK(back == s);
    auto text = t.decode(ids);
    REQUIRE(text.ok());
    CHECK(text->size() >= (dsv4::text::utf8::is_valid(s) ? s.size() : 0));
    if (dsv4::text::utf8::is_valid(s)) CHECK(*text == s);
  }
}

TEST_CASE("tokenizer: threads encoding at once with their own states agree with one thread", "[text]") {
  const tokenizer& t = v4();
  const std::string corpus = dsv4::test::read_text_fixture("corpus.txt");
  const auto docs = dsv4::test::read_id_documents("corpus.ids", corpus);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      dsv4::text::encode_state state;
      for (std::size_t d = static_cast<std::size_t>(k); d < docs.size(); d += 2) {
        std::vector<token_id> ids;
        if (!t.encode(docs[d].text, ids, state).ok() || ids != docs[d].ids)
          ++mismatches[static_cast<std::size_t>(k)];
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches == std::vector<int>(4, 0));
}
