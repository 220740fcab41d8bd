// dsv4::text::encode_chat against prompts made by DeepSeek's own encode_messages (encoding_dsv4.py
// of the V4 model repositories, run by tests/reference/make_chat_fixtures.py), including the
// definition's own test vector; and the prompts' ids through the V4 tokenizer.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "dsv4/text/chat.hpp"
#include "dsv4/text/tokenizer.hpp"
#include "text/text_fixtures.hpp"

namespace {

using namespace dsv4::text;

chat_message from_json(const nlohmann::json& m) {
  chat_message out;
  const std::string role = m.at("role").get<std::string>();
  if (role == "system") {
    out.role = chat_role::system;
  } else if (role == "user") {
    out.role = chat_role::user;
  } else if (role == "developer") {
    out.role = chat_role::developer;
  } else if (role == "assistant") {
    out.role = chat_role::assistant;
  } else if (role == "latest_reminder") {
    out.role = chat_role::latest_reminder;
  } else {
    FAIL("role " << role << " in chat_cases.json");
  }
  if (m.contains("content") && !m.at("content").is_null()) out.content = m.at("content").get<std::string>();
  if (m.contains("reasoning_content") && !m.at("reasoning_content").is_null()) {
    out.reasoning = m.at("reasoning_content").get<std::string>();
  }
  if (m.contains("wo_eos")) out.end_of_turn = !m.at("wo_eos").get<bool>();
  return out;
}

chat_options options_from_json(const nlohmann::json& o) {
  chat_options opt;
  opt.mode =
      o.at("thinking_mode").get<std::string>() == "thinking" ? thinking_mode::thinking : thinking_mode::chat;
  opt.drop_thinking = o.at("drop_thinking").get<bool>();
  opt.add_bos = o.at("add_default_bos_token").get<bool>();
  const auto& e = o.at("reasoning_effort");
  opt.effort = e.is_null()                     ? reasoning_effort::unset
               : e.get<std::string>() == "max" ? reasoning_effort::max
                                               : reasoning_effort::high;
  return opt;
}

}  // namespace

TEST_CASE("chat: prompts equal DeepSeek's encode_messages, ids equal the reference tokenizer", "[text]") {
  const auto cases = nlohmann::json::parse(dsv4::test::read_text_fixture("chat_cases.json"));
  REQUIRE(cases.size() >= 90);
  REQUIRE(cases[0].at("name") == "official_test_2");
  auto tok = tokenizer::from_file(dsv4::test::text_fixture_path("tokenizer.json"));
  REQUIRE(tok.ok());
  encode_state state;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    std::vector<chat_message> msgs;
    for (const auto& m : c.at("messages")) msgs.push_back(from_json(m));
    const chat_options opt = options_from_json(c.at("options"));
    INFO("case " << i << " " << c.at("name").get<std::string>() << " " << c.at("options").dump());
    auto prompt = encode_chat(msgs, opt);
    REQUIRE(prompt.ok());
    CHECK(*prompt == c.at("prompt").get<std::string>());
    std::vector<token_id> ids;
    REQUIRE(tok->encode(*prompt, ids, state).ok());
    CHECK(ids == c.at("ids").get<std::vector<token_id>>());
  }
}

TEST_CASE("chat: the documented shapes, written out by hand", "[text]") {
  const std::vector<chat_message> conv{
      {chat_role::system, "You are a helpful assistant.", "", true},
      {chat_role::user, "What is 2+2?", "", true},
  };
  chat_options thinking;
  thinking.mode = thinking_mode::thinking;
  CHECK(encode_chat(conv, thinking).value() ==
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜><think>");
  CHECK(encode_chat(conv).value() ==
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜></think>");
  const std::vector<chat_message> turns{
      {chat_role::user, "hello", "", true},
      {chat_role::assistant, "Hello! I am DeepSeek.", "thinking...", true},
      {chat_role::user, "1+1=?", "", true},
  };
  CHECK(encode_chat(turns, thinking).value() ==
        "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am "
        "DeepSeek.<｜end▁of▁sentence｜>"
        "<｜User｜>1+1=?<｜Assistant｜><think>");
  thinking.drop_thinking = false;
  CHECK(encode_chat(turns, thinking).value() ==
        "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜><think>thinking...</think>Hello! I am DeepSeek."
        "<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜><think>");
}

TEST_CASE("chat: bad messages are refused and leave the output as it was", "[text]") {
  std::string out = "kept";
  const std::vector<chat_message> empty_developer{{chat_role::developer, "", "", true}};
  const auto s = encode_chat(empty_developer, chat_options{}, out);
  CHECK(s.code() == dsv4::errc::invalid_argument);
  CHECK(s.message().find("messages[0]") != std::string::npos);
  CHECK(out == "kept");
  const std::vector<chat_message> bad_role{{static_cast<chat_role>(42), "x", "", true}};
  CHECK(encode_chat(bad_role).error().code() == dsv4::errc::invalid_argument);
  // Appending: a second conversation goes after the first.
  const std::vector<chat_message> one{{chat_role::user, "hi", "", true}};
  chat_options no_bos;
  no_bos.add_bos = false;
  REQUIRE(encode_chat(one, no_bos, out).ok());
  CHECK(out == "kept<｜User｜>hi<｜Assistant｜></think>");
}
