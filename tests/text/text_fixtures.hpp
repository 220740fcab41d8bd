// Readers for the tokenizer's fixtures in tests/fixtures/text/ (written by
// tests/reference/make_tokenizer_fixtures.py): the corpus files and their expected ids.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::test {

inline std::string text_fixture_path(const std::string& name) {
  return std::string(DSV4_FIXTURE_DIR) + "/text/" + name;
}

inline std::string read_text_fixture(const std::string& name) {
  const std::string path = text_fixture_path(name);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct id_document {
  std::string_view text;  // a slice of the corpus
  std::vector<std::int32_t> ids;
};

// Splits `corpus` into the documents of an .ids file and attaches their expected ids.
// Format (little-endian): "DSV4TOK1", u32 count, then per document u32 bytes, u32 n, n x u32.
inline std::vector<id_document> read_id_documents(const std::string& ids_name, std::string_view corpus) {
  const std::string raw = read_text_fixture(ids_name);
  std::size_t at = 0;
  auto u32 = [&] {
    if (raw.size() - at < 4) throw std::runtime_error(ids_name + ": truncated");
    std::uint32_t v;
    std::memcpy(&v, raw.data() + at, 4);
    at += 4;
    return v;
  };
  if (raw.compare(0, 8, "DSV4TOK1") != 0) throw std::runtime_error(ids_name + ": bad magic");
  at = 8;
  const std::uint32_t count = u32();
  std::vector<id_document> docs;
  std::size_t pos = 0;
  for (std::uint32_t d = 0; d < count; ++d) {
    const std::uint32_t bytes = u32();
    const std::uint32_t n = u32();
    if (corpus.size() - pos < bytes) throw std::runtime_error(ids_name + ": longer than the corpus");
    id_document doc{corpus.substr(pos, bytes), {}};
    doc.ids.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) doc.ids.push_back(static_cast<std::int32_t>(u32()));
    docs.push_back(std::move(doc));
    pos += bytes;
  }
  if (pos != corpus.size()) throw std::runtime_error(ids_name + ": shorter than the corpus");
  return docs;
}

}  // namespace dsv4::test
