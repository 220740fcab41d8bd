// Tokenizer throughput on one core: encode and decode of the committed corpus's documents with
// the DeepSeek-V4 tokenizer.json (tests/fixtures/text/). Before timing, each benchmark checks its
// ids against the reference ids of tests/fixtures/text/corpus.ids.
//
//   bm_encode/english   the English documents (this project's docs/*.md: prose, tables, some code)
//   bm_encode/chinese   the Chinese sentences;  bm_encode/mixed: the whole corpus (281 KB)
//   bm_encode_cold      English, a fresh encode_state per call (no per-word cache carried over)
//   bm_decode           English ids back to text
// Each text is repeated to about 1 MB so that a run is not one cache-warm document; "bytes_per_second"
// is input bytes for encode and output bytes for decode, on one thread.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dsv4/text/tokenizer.hpp"
#include "text/text_fixtures.hpp"

namespace {

using dsv4::text::token_id;

struct bench_data {
  dsv4::text::tokenizer tok;
  std::string english, chinese, mixed;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "tokenizer_bench: %s\n", what.c_str());
  std::exit(1);
}

const bench_data& data() {
  static const bench_data d = [] {
    bench_data b;
    auto t = dsv4::text::tokenizer::from_file(dsv4::test::text_fixture_path("tokenizer.json"));
    if (!t.ok()) die(t.error().to_string());
    b.tok = std::move(t).value();
    const std::string corpus = dsv4::test::read_text_fixture("corpus.txt");
    const auto docs = dsv4::test::read_id_documents("corpus.ids", corpus);
    // Check against the reference once: every document of the corpus.
    dsv4::text::encode_state st;
    for (std::size_t i = 0; i < docs.size(); ++i) {
      std::vector<token_id> ids;
      if (!b.tok.encode(docs[i].text, ids, st).ok() || ids != docs[i].ids) {
        die("document " + std::to_string(i) + " does not match the reference ids");
      }
    }
    std::string english, chinese;
    for (std::size_t i = 0; i < 6; ++i) english += docs[i].text;  // docs/*.md
    chinese = std::string(docs[12].text);
    auto repeat = [](const std::string& s) {
      std::string out;
      while (out.size() < (1u << 20)) out += s;
      return out;
    };
    b.english = repeat(english);
    b.chinese = repeat(chinese);
    b.mixed = repeat(corpus);
    return b;
  }();
  return d;
}

void run_encode(benchmark::State& state, const std::string& text) {
  const auto& d = data();
  dsv4::text::encode_state st;
  std::vector<token_id> ids;
  ids.reserve(text.size());
  for (auto _ : state) {
    ids.clear();
    if (!d.tok.encode(text, ids, st).ok()) state.SkipWithError("encode failed");
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(text.size()));
  state.counters["tokens"] = static_cast<double>(ids.size());
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(ids.size());
}

void bm_encode_english(benchmark::State& state) { run_encode(state, data().english); }
void bm_encode_chinese(benchmark::State& state) { run_encode(state, data().chinese); }
void bm_encode_mixed(benchmark::State& state) { run_encode(state, data().mixed); }

void bm_encode_cold(benchmark::State& state) {
  const auto& d = data();
  std::vector<token_id> ids;
  for (auto _ : state) {
    ids.clear();
    dsv4::text::encode_state st;
    if (!d.tok.encode(d.english, ids, st).ok()) state.SkipWithError("encode failed");
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(d.english.size()));
}

void bm_decode(benchmark::State& state) {
  const auto& d = data();
  std::vector<token_id> ids;
  if (!d.tok.encode(d.english, ids).ok()) die("encode failed");
  std::string out;
  for (auto _ : state) {
    out.clear();
    if (!d.tok.decode_bytes(ids, out).ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out.data());
  }
  if (out != d.english) state.SkipWithError("decode does not give the text back");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(out.size()));
}

}  // namespace

BENCHMARK(bm_encode_english)->Name("bm_encode/english")->Unit(benchmark::kMillisecond);
BENCHMARK(bm_encode_chinese)->Name("bm_encode/chinese")->Unit(benchmark::kMillisecond);
BENCHMARK(bm_encode_mixed)->Name("bm_encode/mixed")->Unit(benchmark::kMillisecond);
BENCHMARK(bm_encode_cold)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_decode)->Unit(benchmark::kMillisecond);
