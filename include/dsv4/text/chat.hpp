// The DeepSeek-V4 chat format: a conversation rendered as the prompt text the model was trained on.
//
// Source: `encode_messages` of encoding/encoding_dsv4.py in the deepseek-ai/DeepSeek-V4-Flash and
// -Pro model repositories (MIT), with its test vectors encoding/tests/; docs/tokenizer.md cites
// the copies that were read. This header implements the text conversation part of it:
//
//   [<｜begin▁of▁sentence｜>]                                   once, at the start
//   system:           {content}
//   user, developer:  <｜User｜>{content}
//   latest_reminder:  <｜latest_reminder｜>{content}
//   assistant:        [{reasoning}</think>]{content}<｜end▁of▁sentence｜>
//   after a user or developer message that ends the list or is followed by an assistant or
//   latest_reminder message: <｜Assistant｜> then <think> (thinking mode, for the turn being
//   answered) or </think> (chat mode, and earlier turns when thinking is dropped)
//
// Consecutive user messages merge into one, joined by a blank line. In thinking mode with
// drop_thinking (the default), assistant turns before the last user message lose their reasoning
// and developer messages before it are dropped; the reasoning of later assistant turns is kept.
// reasoning_effort::max prepends the format's "Reasoning Effort" paragraph in thinking mode
// ("high" is accepted and adds nothing, as in the source).
//
// Not implemented (the source has them): tools and tool calls (DSML), tool results, response_format,
// quick-instruction tasks, and continuing after an encoded context.
//
// The result is text: tokenizer::encode() turns it into ids, matching the markers above as added
// tokens. Message content that spells a marker would be matched too, as in the source.
#pragma once

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::text {

namespace chat_tokens {
inline constexpr std::string_view bos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view eos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view user = "<｜User｜>";
inline constexpr std::string_view assistant = "<｜Assistant｜>";
inline constexpr std::string_view latest_reminder = "<｜latest_reminder｜>";
inline constexpr std::string_view think_begin = "<think>";
inline constexpr std::string_view think_end = "</think>";
}  // namespace chat_tokens

enum class chat_role { system, user, developer, assistant, latest_reminder };

struct chat_message {
  chat_role role = chat_role::user;
  std::string content;
  std::string reasoning;    // assistant only: the thinking before the answer (reasoning_content)
  bool end_of_turn = true;  // assistant only: false leaves out <｜end▁of▁sentence｜> (wo_eos)
};

enum class thinking_mode { chat, thinking };
enum class reasoning_effort { unset, high, max };

struct chat_options {
  thinking_mode mode = thinking_mode::chat;
  bool drop_thinking = true;  // drop reasoning of turns before the last user message
  bool add_bos = true;
  reasoning_effort effort = reasoning_effort::unset;
};

namespace detail {

// The paragraph that reasoning_effort::max puts in front of the conversation (format data).
inline constexpr std::string_view reasoning_effort_max_prompt =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the "
    "root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

inline bool asks(chat_role r) noexcept { return r == chat_role::user || r == chat_role::developer; }

struct turn {
  chat_role role;
  std::string content;
  std::string_view reasoning;
  bool end_of_turn;
};

}  // namespace detail

// Appends the prompt text of `messages` to `out`. On failure `out` is left as it was.
inline status encode_chat(std::span<const chat_message> messages, const chat_options& opt, std::string& out) {
  using detail::turn;
  try {
    std::vector<turn> turns;
    turns.reserve(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const chat_message& m = messages[i];
      switch (m.role) {
        case chat_role::system:
        case chat_role::user:
        case chat_role::developer:
        case chat_role::assistant:
        case chat_role::latest_reminder:
          break;
        default:
          return {errc::invalid_argument, "messages[" + std::to_string(i) + "]: unknown role"};
      }
      if (m.role == chat_role::developer && m.content.empty()) {
        return {errc::invalid_argument,
                "messages[" + std::to_string(i) + "]: a developer message needs content"};
      }
      if (m.role == chat_role::user && !turns.empty() && turns.back().role == chat_role::user) {
        turns.back().content += "\n\n";
        turns.back().content += m.content;
        continue;
      }
      turns.push_back({m.role, m.content, m.role == chat_role::assistant ? std::string_view(m.reasoning) : "",
                       m.end_of_turn});
    }
    const bool thinking = opt.mode == thinking_mode::thinking;
    auto last_asking = [](const std::vector<turn>& ts) {
      std::ptrdiff_t last = -1;
      for (std::size_t i = 0; i < ts.size(); ++i) {
        if (detail::asks(ts[i].role)) last = static_cast<std::ptrdiff_t>(i);
      }
      return last;
    };
    if (thinking && opt.drop_thinking) {
      const std::ptrdiff_t last = last_asking(turns);
      std::vector<turn> kept;
      kept.reserve(turns.size());
      for (std::size_t i = 0; i < turns.size(); ++i) {
        const bool before = static_cast<std::ptrdiff_t>(i) < last;
        if (before && turns[i].role == chat_role::developer) continue;
        kept.push_back(std::move(turns[i]));
        if (before && kept.back().role == chat_role::assistant) kept.back().reasoning = {};
      }
      turns = std::move(kept);
    }
    const std::ptrdiff_t last = last_asking(turns);

    std::string s;
    if (opt.add_bos) s += chat_tokens::bos;
    for (std::size_t i = 0; i < turns.size(); ++i) {
      const turn& t = turns[i];
      const auto at = static_cast<std::ptrdiff_t>(i);
      if (i == 0 && thinking && opt.effort == reasoning_effort::max) s += detail::reasoning_effort_max_prompt;
      switch (t.role) {
        case chat_role::system:
          s += t.content;
          break;
        case chat_role::user:
        case chat_role::developer:
          s += chat_tokens::user;
          s += t.content;
          break;
        case chat_role::latest_reminder:
          s += chat_tokens::latest_reminder;
          s += t.content;
          break;
        case chat_role::assistant:
          if (thinking && (!opt.drop_thinking || at > last)) {
            s += t.reasoning;
            s += chat_tokens::think_end;
          }
          s += t.content;
          if (t.end_of_turn) s += chat_tokens::eos;
          break;
      }
      // The assistant's opening follows a question that the next message answers or that ends
      // the conversation (a latest_reminder may come in between).
      const bool next_answers = i + 1 == turns.size() || turns[i + 1].role == chat_role::assistant ||
                                turns[i + 1].role == chat_role::latest_reminder;
      if (next_answers && detail::asks(t.role)) {
        s += chat_tokens::assistant;
        s += thinking && (!opt.drop_thinking || at >= last) ? chat_tokens::think_begin
                                                            : chat_tokens::think_end;
      }
    }
    out += s;
    return {};
  } catch (const std::exception& e) {
    return {errc::invalid_state, std::string("encode_chat: ") + e.what()};
  }
}

inline result<std::string> encode_chat(std::span<const chat_message> messages, const chat_options& opt = {}) {
  std::string out;
  DSV4_TRY(encode_chat(messages, opt, out));
  return out;
}

}  // namespace dsv4::text
