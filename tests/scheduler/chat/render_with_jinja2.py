#!/usr/bin/python3
"""Reference renderings for the chat template tests, by Jinja2 itself.

Renders templates the way Hugging Face transformers' apply_chat_template
(tokenize=False) does: an ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and loop controls, transformers' own `tojson` filter and its
`raise_exception` and `strftime_now` globals, and the variables messages,
tools, documents, add_generation_prompt, the special tokens and the extra
kwargs. The C++ test compares its own renderings with these.

Usage:
  render_with_jinja2.py --config NAME=tokenizer_config.json ... \
      --conversations conversations.json --cases jinja_cases.json

Prints one JSON object:
  {"conversations": {NAME: [RESULT per conversation]}, "cases": [RESULT per case]}
where RESULT is {"text": str} or {"error": str, "raised": bool} ("raised":
the template called raise_exception).
"""

import argparse
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                  "mask_token"]


class TemplateRaised(Exception):
    pass


class GenerationTracker(jinja2.ext.Extension):
    """transformers' {% generation %} ... {% endgeneration %} tag, which marks
    the assistant's text for return_assistant_tokens_mask; it renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_render", [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_environment():
    def raise_exception(message):
        raise TemplateRaised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def token_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def load_config(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    template = config["chat_template"]
    if isinstance(template, list):
        template = {t["name"]: t["template"] for t in template}["default"]
    special = {}
    for key in SPECIAL_TOKENS:
        text = token_text(config.get(key))
        if text is not None:
            special[key] = text
    if isinstance(config.get("additional_special_tokens"), list):
        special["additional_special_tokens"] = [
            t for t in map(token_text, config["additional_special_tokens"]) if t is not None]
    return template, special


_compiled = {}


def compile_template(env, source):
    if source not in _compiled:
        _compiled[source] = env.from_string(source)
    return _compiled[source]


def render(env, source, variables):
    try:
        return {"text": compile_template(env, source).render(**variables)}
    except TemplateRaised as e:
        return {"error": str(e), "raised": True}
    except Exception as e:  # what any other failure is does not matter, only that it failed
        return {"error": f"{type(e).__name__}: {e}", "raised": False}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", action="append", default=[], help="NAME=path")
    parser.add_argument("--conversations")
    parser.add_argument("--cases")
    args = parser.parse_args()
    env = make_environment()
    result = {"conversations": {}, "cases": []}
    if args.conversations:
        with open(args.conversations, encoding="utf-8") as f:
            conversations = json.load(f)
        for item in args.config:
            name, path = item.split("=", 1)
            template, special = load_config(path)
            out = []
            for conv in conversations:
                variables = {
                    "messages": conv["messages"],
                    "tools": conv.get("tools"),
                    "documents": None,
                    "add_generation_prompt": conv.get("add_generation_prompt", False),
                    **special,
                    **conv.get("extra", {}),
                }
                out.append(render(env, template, variables))
            result["conversations"][name] = out
    if args.cases:
        with open(args.cases, encoding="utf-8") as f:
            cases = json.load(f)
        for case in cases:
            result["cases"].append(render(env, case["template"], case.get("vars", {})))
    json.dump(result, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
