// UTF-8 helpers of the tokenizer: well-formedness, lossy conversion, and the byte-level alphabet.
//
// Byte-level BPE works on bytes, and tokenizer.json spells each byte as one printable character
// (the GPT-2 table: the 188 printable bytes stand for themselves, the other 68 are shifted to
// U+0100..U+0143). The tokenizer converts the vocabulary to raw bytes once at load time, so the
// encoder never maps characters; this table is the only place the alphabet appears.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dsv4::text::utf8 {

// What a lead byte allows (Unicode Table 3-7: no overlongs, no surrogates, nothing past
// U+10FFFF): the length of its sequence (0 when the byte starts none, 1 for ASCII) and the range
// of the second byte; the later ones are 80..BF.
struct lead_byte {
  std::size_t len;
  unsigned lo = 0x80, hi = 0xBF;
};
constexpr lead_byte classify_lead(unsigned c) noexcept {
  if (c < 0x80) return {1};
  if (c >= 0xC2 && c <= 0xDF) return {2};
  if (c >= 0xE0 && c <= 0xEF) return {3, c == 0xE0 ? 0xA0u : 0x80u, c == 0xED ? 0x9Fu : 0xBFu};
  if (c >= 0xF0 && c <= 0xF4) return {4, c == 0xF0 ? 0x90u : 0x80u, c == 0xF4 ? 0x8Fu : 0xBFu};
  return {0};
}

// How many of the bytes [p + 1, p + min(n, lead.len)) continue the sequence that lead starts.
inline std::size_t continuation_bytes(const unsigned char* p, std::size_t n, const lead_byte& lead) noexcept {
  std::size_t i = 1;
  for (; i < lead.len && i < n; ++i) {
    const unsigned b = p[i];
    if (b < (i == 1 ? lead.lo : 0x80u) || b > (i == 1 ? lead.hi : 0xBFu)) break;
  }
  return i;
}

// Length of the well-formed UTF-8 sequence that starts at p (n > 0 bytes available), or 0 when
// none starts there.
inline std::size_t sequence_length(const unsigned char* p, std::size_t n) noexcept {
  const lead_byte lead = classify_lead(p[0]);
  if (lead.len <= 1) return lead.len;
  return continuation_bytes(p, n, lead) == lead.len ? lead.len : 0;
}

// Length of the longest well-formed prefix of [p, p + n).
inline std::size_t valid_prefix(const unsigned char* p, std::size_t n) noexcept {
  std::size_t i = 0;
  while (i < n) {
    // ASCII eight bytes at a time: most text is mostly ASCII.
    while (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const std::size_t len = sequence_length(p + i, n - i);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

inline bool is_valid(std::string_view s) noexcept {
  return valid_prefix(reinterpret_cast<const unsigned char*>(s.data()), s.size()) == s.size();
}

// Length of the run of bytes at p that belong to no well-formed sequence: it ends where a
// well-formed sequence starts (or at the end). n > 0 and p[0] must start no sequence.
inline std::size_t invalid_run_length(const unsigned char* p, std::size_t n) noexcept {
  std::size_t i = 1;
  while (i < n && sequence_length(p + i, n - i) == 0) ++i;
  return i;
}

// Length of the maximal subpart of an ill-formed sequence at p (Unicode 3.9, "U+FFFD substitution
// of maximal subparts"): the bytes that could still begin a well-formed sequence, at least 1.
inline std::size_t maximal_subpart(const unsigned char* p, std::size_t n) noexcept {
  const lead_byte lead = classify_lead(p[0]);
  return lead.len == 0 ? 1 : continuation_bytes(p, n, lead);
}

// `bytes` with every maximal ill-formed subpart replaced by U+FFFD (as Rust's from_utf8_lossy
// and Python's errors="replace" do).
inline std::string to_valid_lossy(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::string out;
  out.reserve(n);
  std::size_t i = 0;
  while (i < n) {
    const std::size_t ok = valid_prefix(p + i, n - i);
    out.append(bytes.data() + i, ok);
    i += ok;
    if (i >= n) break;
    out.append("\xEF\xBF\xBD");
    i += maximal_subpart(p + i, n - i);
  }
  return out;
}

// The byte-level alphabet: the code point that stands for each byte.
inline constexpr std::array<std::uint16_t, 256> byte_level_chars = [] {
  std::array<std::uint16_t, 256> t{};
  std::uint16_t extra = 0;
  for (unsigned b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    t[b] = printable ? static_cast<std::uint16_t>(b) : static_cast<std::uint16_t>(256 + extra++);
  }
  return t;
}();

// The byte a code point of the byte-level alphabet stands for, or -1.
inline int byte_of_level_char(std::uint32_t cp) noexcept {
  if (cp < 256) {
    const bool printable = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE);
    return printable ? static_cast<int>(cp) : -1;
  }
  if (cp < 256 + 68) {
    // The shifted bytes, in increasing order of byte value.
    std::uint32_t k = cp - 256;
    for (unsigned b = 0; b < 256; ++b) {
      if (byte_level_chars[b] >= 256 && k-- == 0) return static_cast<int>(b);
    }
  }
  return -1;
}

// Decodes the next code point of valid UTF-8 at s[i] and advances i.
inline std::uint32_t next_code_point(std::string_view s, std::size_t& i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
  std::uint32_t cp = c & (len == 2 ? 0x1Fu : len == 3 ? 0x0Fu : 0x07u);
  for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
  i += len;
  return cp;
}

// The token text of tokenizer.json as bytes, by the rule of the byte-level decoder: a token whose
// characters all belong to the byte-level alphabet stands for those bytes; any other token (an
// added token such as "<｜User｜>") stands for its own UTF-8 text. `token` must be valid UTF-8.
inline std::string byte_level_decode(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  std::size_t i = 0;
  while (i < token.size()) {
    const int b = byte_of_level_char(next_code_point(token, i));
    if (b < 0) return std::string(token);
    out.push_back(static_cast<char>(b));
  }
  return out;
}

}  // namespace dsv4::text::utf8
