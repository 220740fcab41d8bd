"""A tokenizer.json for the tiny checkpoint (tests/fixtures/text/tiny_v4_tokenizer.json).

The tiny models have a vocabulary of 128 ids, the V4 tokenizer one of 129,280, so dsv4-run could
not run text (--prompt, --chat) on a committed checkpoint. This file is a byte-level BPE in the V4
tokenizer's format and with its pre-tokenizer, whose ids below 128 hold what a chat needs:

    0, 1, 2     <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜>, <｜▁pad▁｜>   (as in V4: bos 0 and eos 1,
                the ids of the tiny config.json)
    3 .. 96     the bytes '!' .. '~' (their byte-level spelling is the character itself)
    97, 98      the bytes ' ' and '\\n' (spelled 'Ġ' and 'Ċ')
    99 .. 122   24 merges of common English pieces ("Ġthe", "hello", ...)
    123 .. 127  the chat format's added tokens: <｜User｜>, <｜Assistant｜>, <think>, </think>,
                <｜latest_reminder｜> (normalized, not special, as in V4)
    128 .. 287  the other 160 bytes: a byte-level vocabulary needs all 256, but text that uses them
                encodes to ids the tiny model cannot take

So printable ASCII text and the chat format encode to ids the model reads, and every id the model
draws decodes to ASCII text or a marker. Every added token is also in model.vocab, with the same id.
(V4's file has its chat markers in added_tokens only, after its 128,000 model tokens: the Hugging
Face library gives an added token that model.vocab lacks the next id after the vocabulary, whatever
id the file says, so markers below 128 must be in model.vocab.)

Pure Python, no network. When the Hugging Face `tokenizers` library is installed the script also
loads the file with it and checks that a chat prompt encodes to ids below 128.

Run from the repository root: python3 tests/reference/make_tiny_tokenizer.py
"""
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "text",
                   "tiny_v4_tokenizer.json")
VOCAB = 128  # the tiny models' vocab_size

SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
CHAT = ["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜latest_reminder｜>"]
# Merges in rank order; each side is a token made by an earlier merge or a byte.
MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("Ġ", "a"), ("o", "n"), ("r", "e"),
    ("a", "t"), ("e", "n"), ("o", "r"), ("i", "s"), ("Ġ", "s"), ("Ġ", "w"), ("l", "l"), ("he", "ll"),
    ("hell", "o"), ("Ġ", "i"), ("Ġi", "s"), ("o", "u"), ("Ġ", "h"), ("o", "w"), ("Ġh", "ow"), ("a", "r"),
]
# The V4 pre-tokenizer (tests/fixtures/text/tokenizer.json): digits in runs of up to three, CJK and
# kana runs, then the word pattern, then the byte-level mapping.
PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
        {"type": "Split", "pattern": {"Regex": "[一-龥\u3040-ゟ゠-ヿ]+"}, "behavior": "Isolated",
         "invert": False},
        {"type": "Split",
         "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|"
                              "[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|"
                              "\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}


def byte_chars():
    """GPT-2's byte-to-character map of the ByteLevel step: printable Latin-1 bytes stand for
    themselves, the others for U+0100 onwards in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def build():
    chars = byte_chars()
    vocab = {}

    def add(spelling):
        assert spelling not in vocab, spelling
        vocab[spelling] = len(vocab)

    for s in SPECIAL:
        add(s)
    first = [b for b in range(ord("!"), ord("~") + 1)] + [ord(" "), ord("\n")]
    for b in first:
        add(chars[b])
    for a, b in MERGES:
        assert a in vocab and b in vocab, (a, b)
        add(a + b)
    chat_ids = list(range(len(vocab), len(vocab) + len(CHAT)))
    for s in CHAT:
        add(s)
    assert chat_ids[-1] == VOCAB - 1, f"the chat tokens end at {chat_ids[-1]}, not {VOCAB - 1}"
    for b in range(256):
        if b not in first:
            add(chars[b])

    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(SPECIAL)]
    added += [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": True, "special": False} for i, s in zip(chat_ids, CHAT)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": PRE_TOKENIZER,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in MERGES]},
    }


def check_with_tokenizers(path):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("(the tokenizers library is not installed: the file was not checked with it)")
        return
    tok = Tokenizer.from_file(path)
    prompt = ("<｜begin▁of▁sentence｜>You are terse.<｜User｜>hello, how is the weather?"
              "<｜Assistant｜></think>")
    ids = tok.encode(prompt, add_special_tokens=False).ids
    assert all(i < VOCAB for i in ids), ids
    assert tok.decode(ids, skip_special_tokens=False) == prompt
    print("tokenizers", prompt, "->", ids)


def main():
    data = build()
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT)}: {len(data['model']['vocab'])} model tokens, "
          f"{len(data['model']['merges'])} merges, {len(data['added_tokens'])} added tokens")
    check_with_tokenizers(OUT)


if __name__ == "__main__":
    main()
