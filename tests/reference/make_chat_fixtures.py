"""Golden prompts for dsv4::text::encode_chat, from DeepSeek's own definition of the V4 chat format.

The definition is `encode_messages` in encoding/encoding_dsv4.py, shipped in the `encoding/` folder
of the deepseek-ai/DeepSeek-V4-Flash and DeepSeek-V4-Pro model repositories (MIT). That file is not
part of this repository: pass the folder that holds it (a downloaded checkpoint's `encoding/`).
From the repository root:

    pip install -r tests/reference/requirements.txt
    python3 tests/reference/make_chat_fixtures.py --encoding /path/to/DeepSeek-V4-Flash/encoding

When the folder also holds the official test vectors (tests/test_input_2.json and
tests/test_output_2.txt: a conversation without tools, in thinking mode), the script first checks
that the definition reproduces them, and stores that vector as the case "official_test_2".

Writes tests/fixtures/text/chat_cases.json: for every case the messages (in the definition's own
dict form), the options, the prompt text and its ids under tests/fixtures/text/tokenizer.json
(Hugging Face `tokenizers`). Only what dsv4::text::encode_chat implements is exercised: roles
system, user, developer, assistant (with reasoning_content and wo_eos) and latest_reminder; chat
and thinking modes; drop_thinking; add_default_bos_token; reasoning_effort None, "high", "max".
"""

import argparse
import copy
import importlib.util
import itertools
import json
import pathlib
import sys

from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "text"


def load_definition(folder):
    path = pathlib.Path(folder) / "encoding_dsv4.py"
    spec = importlib.util.spec_from_file_location("encoding_dsv4", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sys_(c):
    return {"role": "system", "content": c}


def user(c):
    return {"role": "user", "content": c}


def dev(c):
    return {"role": "developer", "content": c}


def remind(c):
    return {"role": "latest_reminder", "content": c}


def asst(c, r=None, wo_eos=False):
    m = {"role": "assistant", "content": c}
    if r is not None:
        m["reasoning_content"] = r
    if wo_eos:
        m["wo_eos"] = True
    return m


CONVERSATIONS = {
    "single_user": [user("What is 2+2?")],
    "system_user": [sys_("You are a helpful assistant."), user("What is 2+2?")],
    "two_turns_with_reasoning": [
        sys_("You are a helpful assistant."),
        user("Hello"),
        asst("Hi there! How can I help you?", "The user said hello, I should greet back."),
        user("What is the capital of France?"),
    ],
    "ends_with_assistant": [
        user("Hello"),
        asst("Hi!", "Greeting."),
        user("Capital of France?"),
        asst("Paris.", "Easy: Paris."),
    ],
    "consecutive_users_merge": [user("First part."), user("Second part."), asst("Got both.", "Two parts."),
                                user("a"), user("b"), user("c")],
    "developer_messages": [sys_("sys"), dev("Search for X.\n\nCITATION FORMAT: [n]"), asst("found", "look"),
                           user("thanks"), asst("ok", "done"), dev("Now search for Y.")],
    "latest_reminder": [sys_("该助手为DeepSeek。"), remind("2026-02-21,星期六,广州,App,中文"), user("今天星期几？"),
                        remind("later reminder"), asst("星期六。", "看提醒。"), user("谢谢")],
    "prefill_without_eos": [user("Write a haiku."), asst("Autumn moonlight—", "A haiku has 5-7-5.", wo_eos=True)],
    "system_last": [user("hi"), asst("hello"), sys_("A late system note.")],
    "empty_contents": [sys_(""), user(""), asst("", ""), user("")],
    "markers_and_unicode": [user("Is <think> a tag? 😀 <｜User｜> \n\n  spaces  "),
                            asst("It is a marker: </think>.", "思考…")],
    "no_messages": [],
}

OPTIONS = [
    dict(thinking_mode=m, drop_thinking=d, add_default_bos_token=True, reasoning_effort=None)
    for m, d in itertools.product(["chat", "thinking"], [True, False])
] + [
    dict(thinking_mode="thinking", drop_thinking=True, add_default_bos_token=True, reasoning_effort="max"),
    dict(thinking_mode="thinking", drop_thinking=True, add_default_bos_token=True, reasoning_effort="high"),
    dict(thinking_mode="chat", drop_thinking=True, add_default_bos_token=True, reasoning_effort="max"),
    dict(thinking_mode="thinking", drop_thinking=False, add_default_bos_token=False, reasoning_effort=None),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoding", required=True, help="folder holding encoding_dsv4.py")
    args = ap.parse_args()
    enc = load_definition(args.encoding)
    tok = Tokenizer.from_file(str(FIX / "tokenizer.json"))
    cases = []

    official_in = pathlib.Path(args.encoding) / "tests" / "test_input_2.json"
    official_out = pathlib.Path(args.encoding) / "tests" / "test_output_2.txt"
    if official_in.exists() and official_out.exists():
        msgs = json.loads(official_in.read_text(encoding="utf-8"))
        gold = official_out.read_text(encoding="utf-8")
        prompt = enc.encode_messages(copy.deepcopy(msgs), thinking_mode="thinking")
        assert prompt == gold, "the definition does not reproduce its own test vector 2"
        cases.append({"name": "official_test_2", "messages": msgs,
                      "options": dict(thinking_mode="thinking", drop_thinking=True, add_default_bos_token=True,
                                      reasoning_effort=None),
                      "prompt": gold, "ids": tok.encode(gold, add_special_tokens=False).ids})

    for name, msgs in CONVERSATIONS.items():
        for opt in OPTIONS:
            prompt = enc.encode_messages(copy.deepcopy(msgs), **opt)
            cases.append({"name": name, "messages": msgs, "options": opt, "prompt": prompt,
                          "ids": tok.encode(prompt, add_special_tokens=False).ids})
    (FIX / "chat_cases.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print("chat_cases.json: %d cases" % len(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
