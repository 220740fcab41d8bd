// dsv4::text from the consumer's side: the chat format and a PCRE2 pattern (so that the link to
// PCRE2 the package exports is exercised).
#include <dsv4/text/chat.hpp>
#include <dsv4/text/regex.hpp>

#include <vector>

int text_part() {
  const std::vector<dsv4::text::chat_message> conv{{dsv4::text::chat_role::user, "hi", "", true}};
  auto prompt = dsv4::text::encode_chat(conv);
  if (!prompt.ok() || prompt->find("<｜User｜>hi") == std::string::npos) return 1;
  dsv4::text::regex re;
  if (!dsv4::text::regex::compile("\\p{L}+", false, re).ok()) return 1;
  dsv4::text::regex::matcher m(re);
  std::size_t b = 0, e = 0;
  return m.find("12 ab", 5, 0, b, e) == 1 && b == 3 && e == 5 ? 0 : 1;
}
