// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the DeepSeek-V4 vocabulary:
// 128,000 BPE tokens, 127,741 merges, 1,283 added tokens).
//
// It implements what the file says, in the order the Hugging Face library applies it:
//   1. added tokens are cut out first: leftmost-longest over the tokens with normalized=false, then
//      over those with normalized=true in the remaining text (the normalizer of V4 is empty);
//   2. each remaining stretch is pre-tokenized by the file's Split steps, each applied to every
//      piece the previous step produced (Isolated: matches and the text between them are pieces;
//      Removed: matches are dropped), then the ByteLevel step (bytes, no extra split for V4);
//   3. each piece (a word) is encoded by BPE: bytes to byte tokens, then the lowest-ranked merge,
//      leftmost first, until none applies.
// Decoding maps ids to bytes by the ByteLevel decoder's rule (utf8.hpp) and concatenates them.
//
// Invalid UTF-8 (which the Python API of the reference cannot express): a maximal run of bytes
// that belong to no well-formed sequence is one word of its own, cut out before pre-tokenization
// and encoded by BPE alone; the text around it is encoded as if the run were not there. So
// decode_bytes(encode(s)) == s for any bytes, and encode equals the reference on valid UTF-8.
//
// A tokenizer is immutable and cheap to copy (shared state); const member functions are safe to
// call from several threads. encode() keeps a per-word cache in an encode_state, one per thread;
// the overload without one uses a fresh state per call. Nothing throws: every failure, including
// allocation failure, comes back as a status.
#pragma once

#include "dsv4/core/macros.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/io/json.hpp"
#include "dsv4/text/regex.hpp"
#include "dsv4/text/utf8.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4::text {

using token_id = std::int32_t;

struct encode_options {
  // Cut added tokens ("<｜User｜>", "<think>", ...) out of the text, as the reference does. False
  // encodes their spelling as ordinary text (for untrusted content inside a chat prompt).
  bool match_added_tokens = true;
};

struct decode_options {
  bool skip_special_tokens = false;  // drop added tokens marked "special": true
};

namespace detail {

// Merge rules keyed by the pair of token ids: open addressing, one probe in the common case.
class merge_table {
 public:
  struct entry {
    std::uint64_t key = empty;
    std::int32_t rank = 0;
    token_id id = 0;
  };
  static constexpr std::uint64_t empty = ~std::uint64_t{0};

  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, entry{});
    mask_ = cap - 1;
  }
  static std::uint64_t key(token_id a, token_id b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  // False when the pair is already present.
  bool insert(std::uint64_t k, std::int32_t rank, token_id id) noexcept {
    for (std::size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return false;
      if (slots_[i].key == empty) {
        slots_[i] = {k, rank, id};
        ++size_;
        return true;
      }
    }
  }
  [[nodiscard]] const entry* find(token_id a, token_id b) const noexcept {
    const std::uint64_t k = key(a, b);
    for (std::size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return &slots_[i];
      if (slots_[i].key == empty) return nullptr;
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  static std::uint64_t hash(std::uint64_t k) noexcept {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
  }
  std::vector<entry> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

// The added tokens of one kind, as a byte trie searched leftmost-longest.
class token_trie {
 public:
  void add(std::string_view s, token_id id) {
    std::int32_t n = 0;
    for (const char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      std::int32_t next = -1;
      for (const auto& [b, to] : nodes_[static_cast<std::size_t>(n)].next) {
        if (b == c) next = to;
      }
      if (next < 0) {
        next = static_cast<std::int32_t>(nodes_.size());
        nodes_[static_cast<std::size_t>(n)].next.emplace_back(c, next);
        nodes_.emplace_back();
      }
      n = next;
    }
    nodes_[static_cast<std::size_t>(n)].token = id;
    first_[static_cast<unsigned char>(s[0])] = true;
    empty_ = false;
  }
  [[nodiscard]] bool empty() const noexcept { return empty_; }

  // The leftmost match in s[from, n), the longest one there.
  bool find(std::string_view s, std::size_t from, std::size_t& at, std::size_t& len, token_id& id) const {
    if (empty_) return false;
    for (std::size_t i = from; i < s.size(); ++i) {
      if (!first_[static_cast<unsigned char>(s[i])]) continue;
      std::int32_t n = 0;
      std::size_t best = 0;
      for (std::size_t j = i; j < s.size(); ++j) {
        const auto c = static_cast<unsigned char>(s[j]);
        std::int32_t next = -1;
        for (const auto& [b, to] : nodes_[static_cast<std::size_t>(n)].next) {
          if (b == c) {
            next = to;
            break;
          }
        }
        if (next < 0) break;
        n = next;
        if (nodes_[static_cast<std::size_t>(n)].token >= 0) {
          best = j + 1 - i;
          id = nodes_[static_cast<std::size_t>(n)].token;
        }
      }
      if (best > 0) {
        at = i;
        len = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct node {
    token_id token = -1;
    std::vector<std::pair<unsigned char, std::int32_t>> next;
  };
  std::vector<node> nodes_ = std::vector<node>(1);
  std::array<bool, 256> first_{};
  bool empty_ = true;
};

struct split_step {
  regex re;
  bool remove_matches = false;  // behavior "Removed" (else "Isolated")
};

enum token_flags : std::uint8_t { present = 1, added = 2, special = 4 };

// Token ids by spelling while the merges are read (three lookups each, 383,000 for V4): open
// addressing over the ids, each slot with a tag of the spelling's hash, which answers with fewer
// cache misses than the nodes of an unordered_map.
class spelling_index {
 public:
  spelling_index(const std::vector<std::string>& spelling, const std::vector<std::uint8_t>& flags)
      : spelling_(spelling) {
    std::size_t cap = 64;
    while (cap < 2 * spelling.size()) cap <<= 1;
    slots_.assign(cap, slot{});
    mask_ = cap - 1;
    for (std::size_t k = 0; k < spelling.size(); ++k) {
      if (!(flags[k] & present)) continue;
      const std::uint64_t h = hash(spelling[k]);
      std::size_t i = h & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = {static_cast<std::uint32_t>(h >> 32), static_cast<token_id>(k)};
    }
  }
  // The id spelled `s`, or -1.
  [[nodiscard]] token_id find(std::string_view s) const noexcept {
    const std::uint64_t h = hash(s);
    const auto tag = static_cast<std::uint32_t>(h >> 32);
    for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
      const slot& e = slots_[i];
      if (e.id < 0) return -1;
      if (e.tag == tag && spelling_[static_cast<std::size_t>(e.id)] == s) return e.id;
    }
  }

 private:
  struct slot {
    std::uint32_t tag = 0;
    token_id id = -1;
  };
  static std::uint64_t hash(std::string_view s) noexcept { return std::hash<std::string_view>{}(s); }
  const std::vector<std::string>& spelling_;
  std::vector<slot> slots_;
  std::size_t mask_ = 0;
};

struct tokenizer_data {
  std::vector<std::string> spelling;  // per id: the text in tokenizer.json
  std::vector<std::string> bytes;     // per id: what it decodes to
  std::vector<std::uint8_t> flags;    // per id: token_flags
  std::unordered_map<std::string, token_id> by_spelling;
  std::array<token_id, 256> byte_token{};
  merge_table merges;
  token_trie plain_added;       // added tokens with normalized = false
  token_trie normalized_added;  // added tokens with normalized = true
  std::vector<split_step> steps;
  std::size_t model_tokens = 0;
  std::size_t added_tokens = 0;
};

// ---- tokenizer.json as JSON ------------------------------------------------------------------
//
// tokenizer.json comes from a checkpoint directory, so every byte is hostile: it is read by
// io::parse_json (dsv4/io/json.hpp), which refuses nesting deeper than 64 levels and repeated
// member names and throws nothing for bad input. The tree is an ordered_json: objects keep their
// members in file order, in a vector. For the vocabulary (128,000 members) that is much faster to
// build, walk and free than a std::map, and the vocabulary is then read in id order, as the file
// lists it.
using json = nlohmann::ordered_json;
inline constexpr int max_json_depth = 64;  // levels below the top object

}  // namespace detail

// Per-thread scratch of encode(): match state for each pre-tokenizer step and the per-word cache
// (words repeat, so most of English text skips BPE). Reused across calls on the same tokenizer.
class encode_state {
 public:
  encode_state() = default;
  [[nodiscard]] std::size_t cached_words() const noexcept { return used_; }

 private:
  friend class tokenizer;
  static constexpr std::size_t max_cached_word_bytes = 128;
  static constexpr std::size_t first_slots = std::size_t{1} << 12;
  static constexpr std::size_t max_slots = std::size_t{1} << 18;  // then the cache starts over

  struct symbol {
    token_id id;
    std::int32_t prev, next;
    std::uint32_t len;
  };
  struct candidate {
    std::int32_t rank, pos;
    token_id id;
  };
  // The word cache: open addressing over words of 2 to 128 bytes; keys and ids live in arenas.
  struct slot {
    std::uint64_t hash = 0;
    std::uint32_t key = 0, key_len = 0;  // key_len 0: empty
    std::uint32_t ids = 0, ids_len = 0;
  };

  static std::uint64_t hash_word(std::string_view w) noexcept {
    std::uint64_t h = 0x9E3779B97F4A7C15ull ^ w.size();
    const char* p = w.data();
    std::size_t n = w.size();
    for (; n >= 8; p += 8, n -= 8) {
      std::uint64_t v;
      std::memcpy(&v, p, 8);
      h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
      h ^= h >> 31;
    }
    if (n > 0) {
      std::uint64_t v = 0;
      std::memcpy(&v, p, n);
      h = (h ^ v) * 0x94d049bb133111ebull;
      h ^= h >> 29;
    }
    return h ^ (h >> 32);
  }

  // The slot holding `w`, or the empty slot where it would go.
  slot& probe(std::string_view w, std::uint64_t h) noexcept {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      slot& s = slots_[i];
      if (s.key_len == 0) return s;
      if (s.hash == h && s.key_len == w.size() &&
          std::memcmp(keys_.data() + s.key, w.data(), w.size()) == 0) {
        return s;
      }
    }
  }

  const slot* find(std::string_view w, std::uint64_t h) noexcept {
    if (slots_.empty()) return nullptr;
    const slot& s = probe(w, h);
    return s.key_len == 0 ? nullptr : &s;
  }

  void insert(std::string_view w, std::uint64_t h, const token_id* ids, std::size_t n) {
    if (slots_.empty()) slots_.assign(first_slots, slot{});
    if (2 * (used_ + 1) > slots_.size()) {
      if (slots_.size() < max_slots) {
        std::vector<slot> old(slots_.size() * 2);
        old.swap(slots_);
        const std::size_t mask = slots_.size() - 1;
        for (const slot& s : old) {
          if (s.key_len == 0) continue;
          std::size_t i = s.hash & mask;
          while (slots_[i].key_len != 0) i = (i + 1) & mask;
          slots_[i] = s;
        }
      } else {
        clear_cache();
      }
    }
    slot& s = probe(w, h);
    s = {h, static_cast<std::uint32_t>(keys_.size()), static_cast<std::uint32_t>(w.size()),
         static_cast<std::uint32_t>(ids_.size()), static_cast<std::uint32_t>(n)};
    keys_.append(w);
    ids_.insert(ids_.end(), ids, ids + n);
    ++used_;
  }

  void clear_cache() {
    std::fill(slots_.begin(), slots_.end(), slot{});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }

  std::shared_ptr<const detail::tokenizer_data> bound_;
  std::vector<regex::matcher> matchers_;
  std::vector<slot> slots_;
  std::string keys_;
  std::vector<token_id> ids_;
  std::size_t used_ = 0;
  std::vector<symbol> symbols_;
  std::vector<candidate> heap_;
};

class tokenizer {
 public:
  // Reads tokenizer.json from `path` (a checkpoint directory's own file).
  static result<tokenizer> from_file(const std::filesystem::path& path) {
    try {
      std::ifstream in(path, std::ios::binary);
      if (!in) return status(errc::io_error, "cannot open " + path.string());
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (in.bad()) return status(errc::io_error, "cannot read " + path.string());
      auto t = from_json(text);
      if (!t.ok()) return status(t.error().code(), path.string() + ": " + t.error().message());
      return t;
    } catch (const std::exception& e) {
      return status(errc::io_error, path.string() + ": " + e.what());
    }
  }

  // Builds a tokenizer from the text of a tokenizer.json.
  static result<tokenizer> from_json(std::string_view text) {
    try {
      auto data = std::make_shared<detail::tokenizer_data>();
      DSV4_TRY(load(text, *data));
      tokenizer t;
      t.data_ = std::move(data);
      return t;
    } catch (const std::bad_alloc&) {
      return status(errc::io_error, "tokenizer.json: out of memory while loading");
    } catch (const std::exception& e) {
      return status(errc::io_error, std::string("tokenizer.json: ") + e.what());
    }
  }

  // Appends the ids of `text` to `out`. On failure `out` is left as it was.
  status encode(std::string_view text, std::vector<token_id>& out, encode_state& state,
                const encode_options& opt = {}) const {
    if (!data_) return {errc::invalid_state, "tokenizer: not loaded"};
    const std::size_t before = out.size();
    try {
      bind(state);
      status s = opt.match_added_tokens ? encode_added(text, 0, out, state) : encode_text(text, out, state);
      if (!s.ok()) out.resize(before);
      return s;
    } catch (const std::bad_alloc&) {
      out.resize(before);
      return {errc::invalid_state, "tokenizer: out of memory while encoding"};
    } catch (const std::exception& e) {
      out.resize(before);
      return {errc::invalid_state, std::string("tokenizer: ") + e.what()};
    }
  }
  status encode(std::string_view text, std::vector<token_id>& out, const encode_options& opt = {}) const {
    try {
      encode_state state;
      return encode(text, out, state, opt);
    } catch (const std::exception& e) {
      return {errc::invalid_state, std::string("tokenizer: ") + e.what()};
    }
  }
  result<std::vector<token_id>> encode(std::string_view text, const encode_options& opt = {}) const {
    std::vector<token_id> ids;
    DSV4_TRY(encode(text, ids, opt));
    return ids;
  }

  // Appends the bytes the ids stand for. An id outside the vocabulary fails (the reference skips
  // it silently); on failure `out` is left as it was.
  status decode_bytes(std::span<const token_id> ids, std::string& out, const decode_options& opt = {}) const {
    if (!data_) return {errc::invalid_state, "tokenizer: not loaded"};
    const std::size_t before = out.size();
    try {
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const token_id id = ids[i];
        if (!contains(id)) {
          out.resize(before);
          return {errc::out_of_range, "decode: ids[" + std::to_string(i) + "] = " + std::to_string(id) +
                                          " is not in the vocabulary (size " + std::to_string(vocab_size()) +
                                          ")"};
        }
        const auto k = static_cast<std::size_t>(id);
        if (opt.skip_special_tokens && (data_->flags[k] & detail::special)) continue;
        out += data_->bytes[k];
      }
      return {};
    } catch (const std::exception& e) {
      out.resize(before);
      return {errc::invalid_state, std::string("decode: ") + e.what()};
    }
  }
  // The decoded text as valid UTF-8: ill-formed bytes (a prefix of a character split across
  // tokens, say) become U+FFFD, as the reference's decoder does.
  result<std::string> decode(std::span<const token_id> ids, const decode_options& opt = {}) const {
    std::string bytes;
    DSV4_TRY(decode_bytes(ids, bytes, opt));
    try {
      return utf8::to_valid_lossy(bytes);
    } catch (const std::exception& e) {
      return status(errc::invalid_state, std::string("decode: ") + e.what());
    }
  }

  // Ids are 0 .. vocab_size() - 1 (129,280 for V4: the model's 128,000 and the added tokens).
  [[nodiscard]] std::size_t vocab_size() const noexcept { return data_ ? data_->flags.size() : 0; }
  [[nodiscard]] std::size_t model_vocab_size() const noexcept { return data_ ? data_->model_tokens : 0; }
  [[nodiscard]] std::size_t merge_count() const noexcept { return data_ ? data_->merges.size() : 0; }
  [[nodiscard]] std::size_t added_token_count() const noexcept { return data_ ? data_->added_tokens : 0; }
  [[nodiscard]] std::size_t pre_tokenizer_steps() const noexcept { return data_ ? data_->steps.size() : 0; }
  [[nodiscard]] bool jit() const noexcept {
    if (!data_) return false;
    return std::all_of(data_->steps.begin(), data_->steps.end(), [](const auto& s) { return s.re.jit(); });
  }

  [[nodiscard]] bool contains(token_id id) const noexcept {
    return data_ && id >= 0 && static_cast<std::size_t>(id) < data_->flags.size() &&
           (data_->flags[static_cast<std::size_t>(id)] & detail::present);
  }
  // The id of a token spelled as in tokenizer.json ("Ġthe", "<｜User｜>"), if any.
  [[nodiscard]] std::optional<token_id> token_to_id(std::string_view spelling) const {
    if (!data_) return std::nullopt;
    const auto it = data_->by_spelling.find(std::string(spelling));
    if (it == data_->by_spelling.end()) return std::nullopt;
    return it->second;
  }
  [[nodiscard]] std::optional<std::string_view> id_to_token(token_id id) const noexcept {
    if (!contains(id)) return std::nullopt;
    return std::string_view(data_->spelling[static_cast<std::size_t>(id)]);
  }
  [[nodiscard]] bool is_added(token_id id) const noexcept {
    return contains(id) && (data_->flags[static_cast<std::size_t>(id)] & detail::added);
  }
  [[nodiscard]] bool is_special(token_id id) const noexcept {
    return contains(id) && (data_->flags[static_cast<std::size_t>(id)] & detail::special);
  }

 private:
  static constexpr std::int64_t max_token_id = (std::int64_t{1} << 24) - 1;

  // ---- loading ---------------------------------------------------------------------------------

  static std::string quoted(std::string_view s) {
    std::string q = "\"";
    q.append(s.substr(0, 64));
    if (s.size() > 64) q += "...";
    return q + "\"";
  }

  static status unsupported(std::string what) { return {errc::unsupported, std::move(what)}; }
  static status malformed(std::string what) { return {errc::io_error, std::move(what)}; }

  // Non-throwing views of the parsed tree: nullptr where the value is missing or of another type.
  using json = detail::json;
  static const json* member(const json* obj, std::string_view key) {
    const auto* o = obj ? obj->get_ptr<const json::object_t*>() : nullptr;
    if (o == nullptr) return nullptr;
    const auto it = o->find(std::string(key));
    return it == o->end() ? nullptr : &it->second;
  }
  static const json* member(const json& obj, std::string_view key) { return member(&obj, key); }
  static const std::string* text_of(const json* v) { return v ? v->get_ptr<const std::string*>() : nullptr; }
  static const json::array_t* array_of(const json* v) {
    return v ? v->get_ptr<const json::array_t*>() : nullptr;
  }
  static const json::object_t* object_of(const json* v) {
    return v ? v->get_ptr<const json::object_t*>() : nullptr;
  }
  static bool absent(const json* v) { return v == nullptr || v->is_null(); }
  // A number that is an integer in [lo, hi] (2.0 counts, 2.5 does not), or false.
  static bool as_integer(const json& v, std::int64_t lo, std::int64_t hi, std::int64_t& out) {
    if (const auto* u = v.get_ptr<const json::number_unsigned_t*>()) {
      if (hi < 0 || *u > static_cast<std::uint64_t>(hi) || static_cast<std::int64_t>(*u) < lo) return false;
      out = static_cast<std::int64_t>(*u);
      return true;
    }
    if (const auto* i = v.get_ptr<const json::number_integer_t*>()) {
      if (*i < lo || *i > hi) return false;
      out = *i;
      return true;
    }
    if (const auto* f = v.get_ptr<const json::number_float_t*>()) {
      const double d = *f;
      if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) return false;
      const auto i = static_cast<std::int64_t>(d);
      if (static_cast<double>(i) != d) return false;
      out = i;
      return true;
    }
    return false;
  }
  static bool is_zero(const json& v) {
    if (const auto* u = v.get_ptr<const json::number_unsigned_t*>()) return *u == 0;
    if (const auto* i = v.get_ptr<const json::number_integer_t*>()) return *i == 0;
    if (const auto* f = v.get_ptr<const json::number_float_t*>()) return *f == 0.0;
    return false;
  }

  static status flag(const json& obj, std::string_view key, bool fallback, bool& out,
                     const std::string& where) {
    const json* v = member(obj, key);
    if (absent(v)) {
      out = fallback;
      return {};
    }
    const bool* b = v->get_ptr<const bool*>();
    if (b == nullptr) return malformed(where + "." + std::string(key) + ": expected true or false");
    out = *b;
    return {};
  }

  static status load(std::string_view text, detail::tokenizer_data& d) {
    json root;
    if (status parsed = io::parse_json(text, root, detail::max_json_depth); !parsed.ok()) {
      return {parsed.code(), "tokenizer.json: " + parsed.message()};
    }
    status s = load_tree(root, d);
    io::release(root);
    return s;
  }

  static status load_tree(const json& root, detail::tokenizer_data& d) {
    if (!root.is_object()) return malformed("tokenizer.json: expected an object at the top level");
    DSV4_TRY(check_normalizer(root));
    DSV4_TRY(check_decoder(root));
    DSV4_TRY(load_model(root, d));
    DSV4_TRY(load_added(root, d));
    DSV4_TRY(load_pre_tokenizer(root, d));
    return {};
  }

  static status check_normalizer(const json& root) {
    const json* n = member(root, "normalizer");
    if (absent(n)) return {};
    const std::string* type = text_of(member(n, "type"));
    if (type == nullptr) return malformed("normalizer: missing \"type\"");
    if (*type == "Sequence") {
      const json::array_t* list = array_of(member(n, "normalizers"));
      if (list == nullptr) return malformed("normalizer: Sequence without \"normalizers\"");
      if (list->empty()) return {};
      return unsupported("normalizer: a Sequence of " + std::to_string(list->size()) +
                         " normalizers is not supported (only an empty one)");
    }
    return unsupported("normalizer: type " + quoted(*type) + " is not supported");
  }

  static status check_decoder(const json& root) {
    const json* dec = member(root, "decoder");
    if (absent(dec)) return unsupported("decoder: missing (only ByteLevel is supported)");
    const std::string* type = text_of(member(dec, "type"));
    if (type == nullptr) return malformed("decoder: missing \"type\"");
    if (*type != "ByteLevel") {
      return unsupported("decoder: type " + quoted(*type) + " is not supported (only ByteLevel)");
    }
    return {};
  }

  // Grows the per-id tables to hold `id`.
  static void grow(detail::tokenizer_data& d, token_id id) {
    const auto need = static_cast<std::size_t>(id) + 1;
    if (d.flags.size() < need) {
      d.flags.resize(need, 0);
      d.spelling.resize(need);
      d.bytes.resize(need);
    }
  }

  static status load_model(const json& root, detail::tokenizer_data& d) {
    const json* model = member(root, "model");
    if (object_of(model) == nullptr) return malformed("model: missing");
    const std::string* type = text_of(member(model, "type"));
    if (type == nullptr) return malformed("model.type: missing");
    if (*type != "BPE") return unsupported("model.type: " + quoted(*type) + " (only BPE)");
    if (const json* v = member(model, "dropout"); !absent(v) && !is_zero(*v)) {
      return unsupported("model.dropout: BPE dropout is not supported");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const json* v = member(model, key);
      const std::string* s = text_of(v);
      if (!absent(v) && !(s && s->empty()))
        return unsupported("model." + std::string(key) + " is not supported");
    }
    for (const char* key : {"byte_fallback", "ignore_merges"}) {
      bool on = false;
      DSV4_TRY(flag(*model, key, false, on, "model"));
      if (on) return unsupported("model." + std::string(key) + " = true is not supported");
    }

    const json::object_t* vocab = object_of(member(model, "vocab"));
    if (vocab == nullptr) return malformed("model.vocab: missing or not an object");
    const std::int64_t limit =
        std::min<std::int64_t>(max_token_id, 4 * static_cast<std::int64_t>(vocab->size()) + 65536);
    d.by_spelling.reserve(vocab->size() + 4096);
    d.flags.reserve(vocab->size());
    d.spelling.reserve(vocab->size());
    d.bytes.reserve(vocab->size());
    for (const auto& [spelling, v] : *vocab) {
      std::int64_t id = 0;
      if (!as_integer(v, 0, limit, id)) {
        return {errc::out_of_range, "model.vocab[" + quoted(spelling) + "]: id must be an integer in [0, " +
                                        std::to_string(limit) + "]"};
      }
      if (spelling.empty()) return malformed("model.vocab: an empty token");
      const auto tid = static_cast<token_id>(id);
      grow(d, tid);
      const auto k = static_cast<std::size_t>(tid);
      if (d.flags[k] & detail::present) {
        return malformed("model.vocab: id " + std::to_string(id) + " is given to both " +
                         quoted(d.spelling[k]) + " and " + quoted(spelling));
      }
      d.flags[k] = detail::present;
      d.spelling[k] = spelling;
      d.bytes[k] = utf8::byte_level_decode(spelling);
      d.by_spelling.emplace(spelling, tid);
    }
    d.model_tokens = vocab->size();

    // Every byte needs its token, or BPE cannot start.
    for (unsigned b = 0; b < 256; ++b) {
      std::string ch;
      const std::uint32_t cp = utf8::byte_level_chars[b];
      if (cp < 0x80) {
        ch.push_back(static_cast<char>(cp));
      } else {
        ch.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        ch.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      const auto it = d.by_spelling.find(ch);
      if (it == d.by_spelling.end()) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", b);
        return malformed("model.vocab: no token for byte " + std::string(hex) + " (" + quoted(ch) +
                         "); a byte-level vocabulary needs all 256");
      }
      d.byte_token[b] = it->second;
    }

    const json::array_t* merges = array_of(member(model, "merges"));
    if (merges == nullptr) return malformed("model.merges: missing or not an array");
    d.merges.reserve(merges->size());
    const detail::spelling_index index(d.spelling, d.flags);
    std::string joined;
    for (std::size_t r = 0; r < merges->size(); ++r) {
      const json& m = (*merges)[r];
      const auto where = [r] { return "model.merges[" + std::to_string(r) + "]"; };
      std::string_view a, b;
      const json::array_t* pair = array_of(&m);
      if (const std::string* s = text_of(&m)) {
        const std::size_t sp = s->find(' ');
        if (sp == std::string::npos || s->find(' ', sp + 1) != std::string::npos) {
          return malformed(where() + ": " + quoted(*s) + " is not two tokens separated by one space");
        }
        a = std::string_view(*s).substr(0, sp);
        b = std::string_view(*s).substr(sp + 1);
      } else if (pair && pair->size() == 2 && text_of(&(*pair)[0]) && text_of(&(*pair)[1])) {
        a = *text_of(&(*pair)[0]);
        b = *text_of(&(*pair)[1]);
      } else {
        return malformed(where() + ": expected \"a b\" or [\"a\", \"b\"]");
      }
      const token_id ia = index.find(a);
      if (ia < 0) return malformed(where() + ": " + quoted(a) + " is not in the vocabulary");
      const token_id ib = index.find(b);
      if (ib < 0) return malformed(where() + ": " + quoted(b) + " is not in the vocabulary");
      joined.assign(a);
      joined.append(b);
      const token_id ij = index.find(joined);
      if (ij < 0)
        return malformed(where() + ": the merged token " + quoted(joined) + " is not in the vocabulary");
      if (!d.merges.insert(detail::merge_table::key(ia, ib), static_cast<std::int32_t>(r), ij)) {
        return malformed(where() + ": the pair " + quoted(std::string(a) + " " + std::string(b)) +
                         " repeats");
      }
    }
    return {};
  }

  static status load_added(const json& root, detail::tokenizer_data& d) {
    const json* listv = member(root, "added_tokens");
    if (absent(listv)) return {};
    const json::array_t* list = array_of(listv);
    if (list == nullptr) return malformed("added_tokens: expected an array");
    const std::int64_t limit = std::min<std::int64_t>(
        max_token_id, 4 * static_cast<std::int64_t>(d.model_tokens + list->size()) + 65536);
    std::unordered_map<std::string, std::size_t> contents;
    for (std::size_t i = 0; i < list->size(); ++i) {
      const json& t = (*list)[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      if (!t.is_object()) return malformed(where + ": expected an object");
      const json* idv = member(t, "id");
      std::int64_t id = 0;
      if (idv == nullptr) return malformed(where + ": missing \"id\"");
      if (!as_integer(*idv, 0, limit, id)) {
        return {errc::out_of_range, where + ": id must be an integer in [0, " + std::to_string(limit) + "]"};
      }
      const std::string* content = text_of(member(t, "content"));
      if (content == nullptr) return malformed(where + ": missing \"content\"");
      if (content->empty()) return malformed(where + ": empty \"content\"");
      bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
      DSV4_TRY(flag(t, "special", false, special, where));
      DSV4_TRY(flag(t, "normalized", !special, normalized, where));
      DSV4_TRY(flag(t, "lstrip", false, lstrip, where));
      DSV4_TRY(flag(t, "rstrip", false, rstrip, where));
      DSV4_TRY(flag(t, "single_word", false, single_word, where));
      if (lstrip || rstrip || single_word) {
        return unsupported(where + " " + quoted(*content) +
                           ": lstrip, rstrip and single_word are not supported");
      }
      if (!contents.emplace(*content, i).second) {
        return malformed(where + ": " + quoted(*content) + " repeats added_tokens[" +
                         std::to_string(contents[*content]) + "]");
      }
      const auto tid = static_cast<token_id>(id);
      grow(d, tid);
      const auto k = static_cast<std::size_t>(tid);
      if (d.flags[k] & detail::added) {
        return malformed(where + ": id " + std::to_string(id) + " is also " + quoted(d.spelling[k]));
      }
      if ((d.flags[k] & detail::present) && d.spelling[k] != *content) {
        return malformed(where + ": id " + std::to_string(id) + " is " + quoted(d.spelling[k]) +
                         " in the vocabulary, not " + quoted(*content));
      }
      if (const auto it = d.by_spelling.find(*content); it != d.by_spelling.end() && it->second != tid) {
        return malformed(where + ": " + quoted(*content) + " has id " + std::to_string(it->second) +
                         " in the vocabulary, not " + std::to_string(id));
      }
      d.flags[k] =
          static_cast<std::uint8_t>(detail::present | detail::added | (special ? detail::special : 0));
      d.spelling[k] = *content;
      d.bytes[k] = utf8::byte_level_decode(*content);
      d.by_spelling.emplace(*content, tid);
      (normalized ? d.normalized_added : d.plain_added).add(*content, tid);
    }
    d.added_tokens = list->size();
    return {};
  }

  static status load_split(const json& p, const std::string& where, detail::tokenizer_data& d) {
    const json* pattern = member(p, "pattern");
    if (object_of(pattern) == nullptr) return malformed(where + ": missing \"pattern\"");
    const json* re = member(pattern, "Regex");
    const json* lit = member(pattern, "String");
    if ((re == nullptr) == (lit == nullptr))
      return malformed(where + ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
    const std::string* src = text_of(re ? re : lit);
    if (src == nullptr) return malformed(where + ".pattern: expected a string");
    const std::string* behavior = text_of(member(p, "behavior"));
    if (behavior == nullptr) return malformed(where + ": missing \"behavior\"");
    detail::split_step step;
    if (*behavior == "Removed") {
      step.remove_matches = true;
    } else if (*behavior != "Isolated") {
      return unsupported(where + ": behavior " + quoted(*behavior) + " is not supported (Isolated, Removed)");
    }
    bool invert = false;
    DSV4_TRY(flag(p, "invert", false, invert, where));
    if (invert) return unsupported(where + ": invert = true is not supported");
    if (src->empty()) return malformed(where + ".pattern: empty");
    status s = regex::compile(*src, lit != nullptr, step.re);
    if (!s.ok()) return {s.code(), where + ": " + s.message()};
    d.steps.push_back(std::move(step));
    return {};
  }

  static status load_pre_tokenizer(const json& root, detail::tokenizer_data& d) {
    const json* pt = member(root, "pre_tokenizer");
    if (absent(pt)) return unsupported("pre_tokenizer: missing (a ByteLevel step is required)");
    std::vector<const json*> list;
    const std::string* type = text_of(member(pt, "type"));
    if (type == nullptr) return malformed("pre_tokenizer: missing \"type\"");
    if (*type == "Sequence") {
      const json::array_t* items = array_of(member(pt, "pretokenizers"));
      if (items == nullptr) return malformed("pre_tokenizer: Sequence without \"pretokenizers\"");
      for (const auto& it : *items) list.push_back(&it);
    } else {
      list.push_back(pt);
    }
    bool byte_level = false;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json& p = *list[i];
      const std::string where = "pre_tokenizer[" + std::to_string(i) + "]";
      const std::string* t = text_of(member(p, "type"));
      if (t == nullptr) return malformed(where + ": missing \"type\"");
      if (byte_level) return unsupported(where + ": a step after ByteLevel is not supported");
      if (*t == "Split") {
        DSV4_TRY(load_split(p, where, d));
      } else if (*t == "ByteLevel") {
        bool prefix = false, use_regex = true;
        DSV4_TRY(flag(p, "add_prefix_space", true, prefix, where));
        DSV4_TRY(flag(p, "use_regex", true, use_regex, where));
        if (prefix) return unsupported(where + ": ByteLevel add_prefix_space = true is not supported");
        if (use_regex) {
          // ByteLevel's own split: the GPT-2 pattern (a fixed part of the format).
          detail::split_step step;
          DSV4_TRY(
              regex::compile(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                             false, step.re));
          d.steps.push_back(std::move(step));
        }
        byte_level = true;
      } else {
        return unsupported(where + ": type " + quoted(*t) + " is not supported (Split, ByteLevel)");
      }
    }
    if (!byte_level)
      return unsupported("pre_tokenizer: no ByteLevel step (only byte-level BPE is supported)");
    return {};
  }

  // ---- encoding --------------------------------------------------------------------------------

  void bind(encode_state& st) const {
    if (st.bound_ == data_) return;
    st.bound_ = data_;
    st.matchers_.clear();
    st.matchers_.reserve(data_->steps.size());
    for (const auto& step : data_->steps) st.matchers_.emplace_back(step.re);
    st.clear_cache();
  }

  // Phase 0 cuts the normalized=false added tokens, phase 1 the normalized=true ones.
  status encode_added(std::string_view s, int phase, std::vector<token_id>& out, encode_state& st) const {
    const detail::token_trie& trie = phase == 0 ? data_->plain_added : data_->normalized_added;
    auto gap = [&](std::string_view g) -> status {
      if (g.empty()) return {};
      return phase == 0 ? encode_added(g, 1, out, st) : encode_text(g, out, st);
    };
    std::size_t from = 0, at = 0, len = 0;
    token_id id = 0;
    while (trie.find(s, from, at, len, id)) {
      DSV4_TRY(gap(s.substr(from, at - from)));
      out.push_back(id);
      from = at + len;
    }
    return gap(s.substr(from));
  }

  // Text free of added tokens: valid stretches go through the pre-tokenizer, invalid runs are words.
  status encode_text(std::string_view s, std::vector<token_id>& out, encode_state& st) const {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    std::size_t i = 0;
    while (i < s.size()) {
      const std::size_t ok = utf8::valid_prefix(p + i, s.size() - i);
      if (ok > 0) DSV4_TRY(split(0, s.substr(i, ok), out, st));
      i += ok;
      if (i >= s.size()) break;
      const std::size_t bad = utf8::invalid_run_length(p + i, s.size() - i);
      encode_word(s.substr(i, bad), out, st);
      i += bad;
    }
    return {};
  }

  status split(std::size_t step, std::string_view piece, std::vector<token_id>& out, encode_state& st) const {
    if (step == data_->steps.size()) {
      encode_word(piece, out, st);
      return {};
    }
    const bool remove = data_->steps[step].remove_matches;
    regex::matcher& m = st.matchers_[step];
    if (!m.ready()) return {errc::invalid_state, "tokenizer: cannot allocate regex match data"};
    std::size_t prev = 0, from = 0, b = 0, e = 0;
    while (from <= piece.size()) {
      const int rc = m.find(piece.data(), piece.size(), from, b, e);
      if (rc == 0) break;
      if (rc < 0) {
        return {errc::invalid_state,
                "pre_tokenizer[" + std::to_string(step) + "]: " + regex::error_message(rc)};
      }
      if (e == b) {  // an empty match splits nothing: step over one character
        if (b >= piece.size()) break;
        from = b + utf8::sequence_length(reinterpret_cast<const unsigned char*>(piece.data()) + b,
                                         piece.size() - b);
        continue;
      }
      if (b > prev) DSV4_TRY(split(step + 1, piece.substr(prev, b - prev), out, st));
      if (!remove) DSV4_TRY(split(step + 1, piece.substr(b, e - b), out, st));
      prev = from = e;
    }
    if (prev < piece.size()) DSV4_TRY(split(step + 1, piece.substr(prev), out, st));
    return {};
  }

  void encode_word(std::string_view w, std::vector<token_id>& out, encode_state& st) const {
    if (w.size() == 1) {
      out.push_back(data_->byte_token[static_cast<unsigned char>(w[0])]);
      return;
    }
    const bool cacheable = w.size() <= encode_state::max_cached_word_bytes;
    std::uint64_t h = 0;
    if (cacheable) {
      h = encode_state::hash_word(w);
      if (const auto* hit = st.find(w, h)) {
        const token_id* ids = st.ids_.data() + hit->ids;
        out.insert(out.end(), ids, ids + hit->ids_len);
        return;
      }
    }
    const std::size_t start = out.size();
    bpe(w, out, st);
    if (cacheable) st.insert(w, h, out.data() + start, out.size() - start);
  }

  // BPE of one word: repeatedly apply the lowest-ranked merge, the leftmost one among equals.
  // A min-heap of candidate merges keyed by (rank, position); a candidate whose symbols have
  // changed since it was pushed is skipped when popped.
  void bpe(std::string_view w, std::vector<token_id>& out, encode_state& st) const {
    auto& sym = st.symbols_;
    auto& heap = st.heap_;
    const auto n = static_cast<std::int32_t>(w.size());
    sym.resize(w.size());
    for (std::int32_t i = 0; i < n; ++i) {
      sym[static_cast<std::size_t>(i)] = {
          data_->byte_token[static_cast<unsigned char>(w[static_cast<std::size_t>(i)])], i - 1,
          i + 1 < n ? i + 1 : -1, 1};
    }
    const auto later = [](const encode_state::candidate& x, const encode_state::candidate& y) {
      return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
    };
    heap.clear();
    auto push = [&](std::int32_t pos) {
      const auto& l = sym[static_cast<std::size_t>(pos)];
      if (l.next < 0) return;
      if (const auto* m = data_->merges.find(l.id, sym[static_cast<std::size_t>(l.next)].id)) {
        heap.push_back({m->rank, pos, m->id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const auto c = heap.back();
      heap.pop_back();
      auto& l = sym[static_cast<std::size_t>(c.pos)];
      if (l.len == 0 || l.next < 0) continue;
      auto& r = sym[static_cast<std::size_t>(l.next)];
      const auto* m = data_->merges.find(l.id, r.id);
      if (m == nullptr || m->id != c.id) continue;
      l.id = c.id;
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (l.next >= 0) sym[static_cast<std::size_t>(l.next)].prev = c.pos;
      if (l.prev >= 0) push(l.prev);
      push(c.pos);
    }
    for (std::int32_t i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
      out.push_back(sym[static_cast<std::size_t>(i)].id);
    }
  }

  std::shared_ptr<const detail::tokenizer_data> data_;
};

}  // namespace dsv4::text
