// The pre-tokenizer's regular expressions, compiled by PCRE2 (UTF + UCP, JIT when available).
//
// tokenizer.json writes its split patterns for Oniguruma (what the Hugging Face library uses):
// Unicode property classes (\p{L}, \p{N}, ...) and a look-ahead (\s+(?!\S)). PCRE2 reads the same
// syntax, and with PCRE2_UCP its \s, \p{..} and character classes follow the Unicode database;
// std::regex has neither and would be slow. A pattern is matched against one piece of text at a
// time (subject = the piece), so a look-ahead never sees past the piece, as in the reference.
// Subjects must be valid UTF-8: the tokenizer checks the input once, and the matches skip PCRE2's
// own check (which would rescan the rest of the subject at every call).
//
// One difference in meaning: Oniguruma's \s is the Unicode White_Space property, while PCRE2's \s
// under UCP follows Perl's older list, which adds U+180E MONGOLIAN VOWEL SEPARATOR (a format
// character since Unicode 6.3). compile() therefore writes \s and \S as \p{White_Space} and
// \P{White_Space} before PCRE2 sees the pattern, taking the property from PCRE2's own tables.
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "dsv4/core/status.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace dsv4::text {

class regex {
 public:
  regex() = default;

  // `pattern` with \s and \S written as the White_Space property (outside \Q...\E quotes;
  // an escaped backslash is copied as it is).
  static std::string with_unicode_spaces(std::string_view pattern) {
    std::string out;
    out.reserve(pattern.size() + 32);
    for (std::size_t i = 0; i < pattern.size(); ++i) {
      const char c = pattern[i];
      if (c != '\\' || i + 1 >= pattern.size()) {
        out.push_back(c);
        continue;
      }
      const char e = pattern[i + 1];
      if (e == 's') {
        out += "\\p{White_Space}";
      } else if (e == 'S') {
        out += "\\P{White_Space}";
      } else if (e == 'Q') {
        const std::size_t end = pattern.find("\\E", i + 2);
        const std::size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i, stop - i));
        i = stop - 1;
        continue;
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      ++i;
    }
    return out;
  }

  // Compiles `pattern` (a regular expression, or a literal string when `literal`).
  static status compile(std::string_view pattern, bool literal, regex& out) {
    const std::string source = literal ? std::string(pattern) : with_unicode_spaces(pattern);
    int err = 0;
    PCRE2_SIZE err_at = 0;
    // PCRE2_LITERAL refuses PCRE2_UCP (a literal has no classes to widen).
    const std::uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    // The pattern text itself must be valid UTF-8 (PCRE2_NO_UTF_CHECK trusts it): the JSON
    // reader only produces valid UTF-8 strings.
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), opts, &err,
                                     &err_at, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      return {errc::invalid_argument, "pattern \"" + std::string(pattern) + "\" at offset " +
                                          std::to_string(err_at) + ": " + reinterpret_cast<const char*>(buf)};
    }
    out.code_ = std::shared_ptr<pcre2_code>(code, free_code{});
    out.jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return {};
  }

  [[nodiscard]] bool compiled() const noexcept { return code_ != nullptr; }
  [[nodiscard]] bool jit() const noexcept { return jit_; }
  [[nodiscard]] const pcre2_code* code() const noexcept { return code_.get(); }

  // Per-thread state of a match: match data and a JIT stack large enough for hostile patterns.
  class matcher {
   public:
    explicit matcher(const regex& re)
        : re_(&re), data_(pcre2_match_data_create_from_pattern(re.code_.get(), nullptr)) {}

    [[nodiscard]] bool ready() const noexcept { return data_ != nullptr; }

    // Finds the first match in subject[start, n). Returns 1 with [begin, end) set, 0 when there
    // is none, or a negative PCRE2 error code.
    int find(const char* subject, std::size_t n, std::size_t start, std::size_t& begin, std::size_t& end) {
      const auto* s = reinterpret_cast<PCRE2_SPTR>(subject);
      const int rc =
          re_->jit_ ? pcre2_jit_match(re_->code_.get(), s, n, start, 0, data_.get(), context())
                    : pcre2_match(re_->code_.get(), s, n, start, PCRE2_NO_UTF_CHECK, data_.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) return 0;
      if (rc < 0) return rc;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data_.get());
      begin = ov[0];
      end = ov[1];
      return 1;
    }

   private:
    pcre2_match_context* context() {
      if (!context_) {
        context_.reset(pcre2_match_context_create(nullptr));
        stack_.reset(pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr));
        if (context_ && stack_) pcre2_jit_stack_assign(context_.get(), nullptr, stack_.get());
      }
      return context_.get();
    }

    struct free_data {
      void operator()(pcre2_match_data* d) const noexcept { pcre2_match_data_free(d); }
    };
    struct free_context {
      void operator()(pcre2_match_context* c) const noexcept { pcre2_match_context_free(c); }
    };
    struct free_stack {
      void operator()(pcre2_jit_stack* s) const noexcept { pcre2_jit_stack_free(s); }
    };
    const regex* re_;
    std::unique_ptr<pcre2_match_data, free_data> data_;
    std::unique_ptr<pcre2_match_context, free_context> context_;
    std::unique_ptr<pcre2_jit_stack, free_stack> stack_;
  };

  static std::string error_message(int rc) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(rc, buf, sizeof buf);
    return reinterpret_cast<const char*>(buf);
  }

 private:
  struct free_code {
    void operator()(pcre2_code* c) const noexcept { pcre2_code_free(c); }
  };
  std::shared_ptr<pcre2_code> code_;  // shared: compiled code is read-only, tokenizers copy cheaply
  bool jit_ = false;
};

}  // namespace dsv4::text
