"""Cross-checks model/chat/testdata/expected.json (made with @huggingface/jinja)
against Python's Jinja2 set up as transformers' apply_chat_template sets it up
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, strftime_now, tojson without ASCII escaping; messages, tools
and documents None, add_generation_prompt, special tokens). Needs jinja2>=3.1.
Exits non-zero on any difference."""

import json
import sys
from datetime import datetime
from pathlib import Path

import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

TESTDATA = Path(__file__).resolve().parent.parent.parent / "model" / "chat" / "testdata"
SPECIAL = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]


class RaisedError(Exception):
    pass


def environment(now):
    def raise_exception(message):
        raise RaisedError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    return env


def token(v):
    return v if isinstance(v, str) else v["content"]


def main():
    expected = json.loads((TESTDATA / "expected.json").read_text())
    now = datetime.strptime(expected["now"], "%Y-%m-%dT%H:%M:%SZ")
    convs = json.loads((TESTDATA / "conversations.json").read_text())
    env = environment(now)
    bad = 0
    n = 0
    for path in sorted((TESTDATA / "configs").glob("*.json")):
        cfg = json.loads(path.read_text())
        src = cfg["chat_template"]
        if not isinstance(src, str):
            src = next(e["template"] for e in src if e["name"] == "default")
        ctx = {k: token(cfg[k]) for k in SPECIAL if cfg.get(k) is not None}
        if cfg.get("additional_special_tokens"):
            ctx["additional_special_tokens"] = [token(v) for v in cfg["additional_special_tokens"]]
        tmpl = env.from_string(src)
        for conv, messages in convs.items():
            for gen in (False, True):
                key = f"{path.stem}/{conv}/{'gen' if gen else 'nogen'}"
                try:
                    got = {"text": tmpl.render(messages=messages, tools=None, documents=None, add_generation_prompt=gen, **ctx)}
                except RaisedError as e:
                    got = {"error": str(e)}
                except TemplateError as e:
                    got = {"error": "jinja2: " + str(e)}
                n += 1
                if got != expected["renderings"].get(key):
                    bad += 1
                    print(f"DIFF {key}\n  jinja2: {got!r}\n  expect: {expected['renderings'].get(key)!r}")
    print(f"{n - bad}/{n} renderings equal between Jinja2 {jinja2.__version__} and {expected['reference']}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
