// The one JSON reader for files that come from outside (safetensors headers, the checkpoint index,
// config.json, tokenizer.json): every byte is hostile.
//
// nlohmann_json's SAX parser checks the grammar, UTF-8, escapes, surrogates and numbers, and is
// not recursive; json_reader builds the tree from its events and adds two rules of its own:
//   - nesting deeper than max_depth levels below the top value stops the parse, so "[[[[..."
//     cannot exhaust memory ("JSON: nesting deeper than 64 levels");
//   - a repeated member name is refused, with its place (nlohmann would keep one copy silently):
//     "JSON: model.vocab: repeated member name \"aa\"".
// A syntax error reads "JSON at byte 10: syntax error while parsing value - invalid literal":
// the parser's description and the byte offset, never the input bytes it echoes. Nothing is
// thrown for bad input: the first problem comes back as a status (errc::io_error).
//
// The tree is either nlohmann::json (objects are std::map: a repeated name is found when it is
// inserted) or nlohmann::ordered_json (objects keep their members in file order in a vector, much
// faster to build, walk and free for an object of 128,000 members; repeated names are looked for
// with one hash pass once the object is complete).
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsv4/core/status.hpp"

namespace dsv4::io {

template <class Json>
class json_reader {
 public:
  json_reader(Json& root, int max_depth) : root_(root), max_depth_(static_cast<std::size_t>(max_depth)) {}

  // The nlohmann_json SAX interface.
  bool null() { return put(Json(nullptr)); }
  bool boolean(bool v) { return put(Json(v)); }
  bool number_integer(typename Json::number_integer_t v) { return put(Json(v)); }
  bool number_unsigned(typename Json::number_unsigned_t v) { return put(Json(v)); }
  bool number_float(typename Json::number_float_t v, const typename Json::string_t& /*text*/) {
    return put(Json(v));
  }
  bool string(typename Json::string_t& v) { return put(Json(std::move(v))); }
  bool binary(typename Json::binary_t& /*v*/) {  // JSON text has no binary values
    error_ = "JSON: unexpected binary value";
    return false;
  }
  bool start_object(std::size_t /*elements*/) { return open(Json::value_t::object); }
  bool start_array(std::size_t /*elements*/) { return open(Json::value_t::array); }
  bool end_object() {
    if constexpr (ordered) {
      if (const std::string* k = repeated(*stack_.back().value->template get_ptr<const object_t*>()))
        return repeated_error(*k);
    }
    return close();
  }
  bool end_array() { return close(); }
  bool key(typename Json::string_t& k) {
    level& top = stack_.back();
    auto& members = *top.value->template get_ptr<object_t*>();
    if constexpr (ordered) {
      // ordered_map is a std::vector of (key, value): append, and look for repeated names once
      // the object is complete (its emplace would search linearly for every member).
      members.emplace_back(std::move(k), nullptr);
      top.key = &members.back().first;
      slot_ = &members.back().second;
    } else {
      const auto [at, inserted] = members.try_emplace(std::move(k));
      if (!inserted) return repeated_error(k);  // try_emplace left k as it was
      top.key = &at->first;
      slot_ = &at->second;
    }
    return true;
  }
  bool parse_error(std::size_t position, const std::string& last_token, const nlohmann::json::exception& e) {
    // e.what(): "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error
    // while parsing value - invalid literal; last read: 'tru}'". Keep the description, not the
    // echo of the input, and give the byte offset instead of line and column.
    std::string what = e.what();
    if (const auto id = what.find("] "); what.starts_with("[json.exception.") && id != std::string::npos) {
      what.erase(0, id + 2);
    }
    if (const auto at = what.find(": "); what.starts_with("parse error") && at != std::string::npos) {
      what.erase(0, at + 2);
    }
    if (const auto echo = what.find("; last read: '" + last_token + "'"); echo != std::string::npos) {
      what.erase(echo, 14 + last_token.size() + 1);
    }
    error_ = "JSON at byte " + std::to_string(position) + ": " + what;
    return false;
  }

  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 private:
  using object_t = typename Json::object_t;
  using array_t = typename Json::array_t;
  static constexpr bool ordered = requires(object_t & m) { m.back(); };  // a vector, not a map

  struct level {
    Json* value;
    const std::string* key = nullptr;  // the member being read (objects)
  };

  static std::string quoted(std::string_view s) {
    std::string q = "\"";
    q.append(s.substr(0, 64));
    if (s.size() > 64) q += "...";
    return q + "\"";
  }

  // "model.vocab: " for a problem inside model.vocab ("added_tokens[3]: " inside an array).
  [[nodiscard]] std::string path() const {
    std::string p;
    for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {  // each level names its child's place
      const level& l = stack_[i];
      if (const auto* items = l.value->template get_ptr<const array_t*>()) {
        p += '[';
        p += std::to_string(items->size() - 1);
        p += ']';
      } else if (l.key != nullptr) {
        if (!p.empty()) p += '.';
        p += l.key->substr(0, 64);
      }
    }
    return p.empty() ? p : p + ": ";
  }

  bool repeated_error(std::string_view k) {
    error_ = "JSON: " + path() + "repeated member name " + quoted(k);
    return false;
  }

  // Stores a value where the parse is: the root, the end of the open array, or the member whose
  // name was just read.
  Json* place(Json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    if (auto* items = stack_.back().value->template get_ptr<array_t*>()) {
      items->push_back(std::move(v));
      return &items->back();
    }
    *slot_ = std::move(v);
    return slot_;
  }
  bool put(Json&& v) {
    place(std::move(v));
    return true;
  }

  bool open(typename Json::value_t type) {
    if (stack_.size() > max_depth_) {
      error_ = "JSON: nesting deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    stack_.push_back({place(Json(type))});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  // The first member name that repeats an earlier one, or nullptr (ordered objects).
  static const std::string* repeated(const object_t& members) {
    if (members.size() <= 16) {
      for (auto i = members.begin(); i != members.end(); ++i) {
        for (auto j = members.begin(); j != i; ++j) {
          if (i->first == j->first) return &i->first;
        }
      }
      return nullptr;
    }
    // Open addressing over member indices (a vocabulary has 128,000 names).
    std::size_t cap = 64;
    while (cap < 2 * members.size()) cap <<= 1;
    std::vector<std::uint32_t> slots(cap, 0);  // index + 1, 0 = empty
    const std::hash<std::string_view> hash;
    std::uint32_t index = 0;
    for (auto m = members.begin(); m != members.end(); ++m) {
      ++index;
      for (std::size_t i = hash(m->first) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (slots[i] == 0) {
          slots[i] = index;
          break;
        }
        if ((members.begin() + (slots[i] - 1))->first == m->first) return &m->first;
      }
    }
    return nullptr;
  }

  Json& root_;
  std::size_t max_depth_;
  std::vector<level> stack_;  // the open arrays and objects, outermost first
  Json* slot_ = nullptr;      // where the value after a key goes
  std::string error_;
};

// Parses `text` into `out` (left null on failure). Containers may nest max_depth levels below
// the top value.
template <class Json>
status parse_json(std::string_view text, Json& out, int max_depth) {
  out = Json();
  try {
    json_reader<Json> reader(out, max_depth);
    if (Json::sax_parse(text.data(), text.data() + text.size(), &reader)) return {};
    out = Json();
    return {errc::io_error, reader.error().empty() ? std::string("JSON: malformed") : reader.error()};
  } catch (const std::exception& e) {  // allocation failure
    out = Json();
    return {errc::io_error, std::string("JSON: ") + e.what()};
  }
}

template <class Json = nlohmann::json>
result<Json> parse_json(std::string_view text, int max_depth) {
  Json j;
  if (status s = parse_json(text, j, max_depth); !s.ok()) return s;
  return j;
}

// Frees a tree depth first. nlohmann's destructor first moves every element of a container onto
// a stack of its own, so that any depth is safe; a tree that parse_json built is at most
// max_depth deep, and this is faster for big objects and arrays.
template <class Json>
void release(Json& j) noexcept {
  if (auto* items = j.template get_ptr<typename Json::array_t*>()) {
    for (auto& v : *items) release(v);
    items->clear();
  } else if (auto* members = j.template get_ptr<typename Json::object_t*>()) {
    for (auto& m : *members) release(m.second);
    members->clear();
  }
}

}  // namespace dsv4::io
