"""Built-in recipe ``contextual``: prompts that teach a student to use tools and context (seed 000).

One slot is one item. Its ``length`` bucket (short / mixed / long) is a quota in the recipe, so
long-context items are an exact share of the plan; its ``scenario`` depends on the bucket. The
generator writes the prompt (an instruction plus tool results or passages, grown to the
bucket's token range) and a teacher response from templates.

Teacher text markup (machine-parseable, see :func:`parse_teacher`):

- a tool call: ``<tool_call>{"name": "...", "arguments": {...} }</tool_call>`` (JSON)
- an integration span (a part that uses a fact from the context): ``<int>...</int>``

Eligible items (tool and passage scenarios) carry 1..``integration_span_cap`` spans; controls
(no context) and negative controls (context that must not be used) carry none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from datamill.columns import GeneratorContext

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
INT_SPAN = re.compile(r"<int>(.*?)</int>", re.S)
MARKUP = re.compile(r"</?int>|</?tool_call>")

LONG_MIN_TOKENS = 8192
BUCKET_TOKENS = {"short": (120, 700), "mixed": (1500, 9500), "long": (8600, 16000)}
CHARS_PER_TOKEN = 4.6  # for this generator's English text and the default WordPiece tokenizer

_SYL = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "dor",
    "sa",
    "tel",
    "bri",
    "no",
    "gar",
    "eth",
    "lu",
    "pan",
    "qui",
    "zo",
    "mar",
    "sel",
]
_TOPICS = [
    "river ports", "glass making", "bee keeping", "tide tables", "rail signals", "paper mills", "salt flats",
    "wind farms", "spice routes", "lighthouses", "bridge design", "orchard pests", "moon phases", "tea blends",
]  # fmt: skip
_UNITS = ["units", "visitors", "tons", "entries", "cases"]
_VERBS = ["records", "notes", "reports", "lists", "shows", "states", "confirms", "mentions"]
_CONDITIONS = ["sunny", "cloudy", "light rain", "fog", "snow", "windy", "clear", "overcast"]


def _name(rng: Any, parts: int = 2) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def _sentence(rng: Any) -> str:
    subject = f"The {rng.choice(_TOPICS)} of {_name(rng)}"
    amount = f"{rng.randint(2, 9999)} {rng.choice(_UNITS)}"
    return f"{subject} {rng.choice(_VERBS)} {amount} in {rng.randint(1950, 2025)}."


def _filler(rng: Any, target_chars: int) -> str:
    paras, size = [], 0
    while size < target_chars:
        para = " ".join(_sentence(rng) for _ in range(rng.randint(3, 7)))
        paras.append(para)
        size += len(para) + 2
    return "\n\n".join(paras)


def _tool(rng: Any) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """(tool name, arguments, result, a fact sentence using the result)."""
    kind = rng.randrange(4)
    city = _name(rng)
    if kind == 0:
        date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        temp, cond = rng.randint(-10, 35), rng.choice(_CONDITIONS)
        return ("get_weather", {"city": city, "date": date}, {"city": city, "temp_c": temp, "condition": cond},
                f"{city} will be {temp}°C with {cond} on {date}")  # fmt: skip
    if kind == 1:
        sym = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4))
        price, chg = round(rng.uniform(5, 900), 2), round(rng.uniform(-9, 9), 2)
        return ("get_stock_price", {"symbol": sym}, {"symbol": sym, "price": price, "change_pct": chg},
                f"{sym} trades at {price}, {chg:+}% today")  # fmt: skip
    if kind == 2:
        pop = rng.randint(2_000, 9_000_000)
        return ("lookup_population", {"city": city}, {"city": city, "population": pop}, f"{city} has {pop:,} residents")
    amount, rate = rng.randint(10, 5000), round(rng.uniform(0.2, 3.0), 4)
    frm, to = rng.sample(["EUR", "USD", "GBP", "JPY", "CHF", "SEK"], 2)
    result = round(amount * rate, 2)
    args = {"amount": amount, "from": frm, "to": to}
    return ("convert_currency", args, {"result": result, "rate": rate}, f"{amount} {frm} is {result} {to}")


def _target_chars(rng: Any, bucket: str) -> int:
    lo, hi = BUCKET_TOKENS[bucket]
    # Mixed items lean long at the top, so the 90th percentile of the run reaches 8k+ tokens.
    return int(rng.uniform(lo, hi) * CHARS_PER_TOKEN)


def generate(ctx: GeneratorContext) -> Iterator[dict[str, Any]]:
    rng = ctx.rng
    inputs = ctx.inputs
    scenario, bucket = inputs["scenario"], inputs["length"]
    cap = int(ctx.params.get("integration_span_cap", 3))
    if bucket == "long" and (ctx.params.get("disable_long_context") or ctx.size < 20):
        bucket = "mixed"  # no long context below N = 20, nor when disabled
    topic = rng.choice(_TOPICS)
    spans = rng.randint(1, cap)
    facts: list[str] = []
    calls: list[str] = []
    if scenario in ("tool_single", "tool_multi"):
        n_tools = 1 if scenario == "tool_single" else rng.randint(2, 3)
        results: list[dict[str, Any]] = []
        subjects: list[str] = []
        for _ in range(n_tools):
            name, args, result, fact = _tool(rng)
            # A space before the closing brace keeps the arguments object on token boundaries.
            calls.append(f'{{"name": {orjson.dumps(name).decode()}, "arguments": {orjson.dumps(args).decode()} }}')
            results.append({"tool": name, "arguments": args, "result": result})
            subjects.append(str(args.get("city") or args.get("symbol") or "the amount"))
            facts.append(fact)
        context = "Tool results:\n" + "\n".join(orjson.dumps(r).decode() for r in results)
        instruction = (
            f"Using the tool results below, answer the user's question about {topic} for {', '.join(subjects)}."
        )
    elif scenario == "passage":
        key = [_sentence(rng) for _ in range(max(spans, 1))]
        facts = [k.rstrip(".") for k in key]
        context = "Passages:\n" + "\n\n".join(key)
        instruction = f"Answer from the passages: what do they say about {topic}? Cite the figures they give."
    elif scenario == "negative_control":
        context = "Passages (unrelated to the question; do not use them):\n" + _sentence(rng)
        instruction = f"Explain in general terms why {topic} matter. Do not use the passages."
    else:  # control: nothing to integrate
        context = ""
        instruction = f"Write two sentences about {topic} around {_name(rng, 3)}."
    if context:
        want = _target_chars(rng, bucket)
        if len(context) < want:
            context += "\n\nBackground records:\n" + _filler(rng, want - len(context))
    prompt = instruction + ("\n\n" + context if context else "")
    if bucket == "long" and ctx.params.get("tokenizer_check", True):
        prompt = _grow_to_tokens(rng, prompt, ctx.params.get("tokenizer"))
    if scenario in ("tool_single", "tool_multi"):
        parts = [f"<tool_call>{c}</tool_call>" for c in calls]
        used = facts[:spans] if len(facts) >= spans else facts + [facts[-1] + " as reported"] * (spans - len(facts))
        parts.append(" ".join(f"Per the results, <int>{f}</int>." for f in used[:spans]))
        teacher = "\n".join(parts)
    elif scenario == "passage":
        teacher = " ".join(f"The passages say that <int>{f}</int>." for f in facts[:spans])
    elif scenario == "negative_control":
        teacher = (
            f"Speaking generally rather than from the passages, {topic} matter because they shape how "
            f"places like {_name(rng)} work."
        )
    else:
        teacher = (
            f"{topic.capitalize()} have a long history around {_name(rng, 3)}. People there still speak of them often."
        )
    yield {
        # The slot's shard in the canonical layout of ``shard_count`` shards: the same whatever
        # --num-shards the run used, and equal to --shard-index when the run used that layout.
        "shard_index": ctx.slot * int(ctx.params.get("shard_count", 10)) // max(1, ctx.size),
        "scenario": scenario,
        "prompt": prompt,
        "teacher_text": teacher,
        "control": scenario == "control",
        "negative_control": scenario == "negative_control",
        "long_context": bucket == "long",
    }


def _grow_to_tokens(rng: Any, prompt: str, tokenizer: str | None) -> str:
    """Append background paragraphs until the prompt has at least LONG_MIN_TOKENS tokens."""
    from datamill.tokenize import TokenCounter

    counter = _COUNTERS.get(tokenizer)
    if counter is None:
        counter = _COUNTERS[tokenizer] = TokenCounter(tokenizer)
    while counter.count([prompt])[0] < LONG_MIN_TOKENS:
        prompt += "\n\n" + _filler(rng, 2000)
    return prompt


_COUNTERS: dict[str | None, Any] = {}


def parse_teacher(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The teacher text without markup, and its marked spans with offsets into that clean text.

    Span kinds: ``tool_name``, ``tool_args`` (the JSON arguments object) and ``integration``.
    """
    clean = []
    spans: list[dict[str, Any]] = []
    pos = 0  # in the clean text
    i = 0
    while i < len(text):
        if text.startswith("<tool_call>", i):
            end = text.index("</tool_call>", i)
            body = text[i + len("<tool_call>") : end]
            call = orjson.loads(body)
            name_json = orjson.dumps(call["name"]).decode()
            args_json = orjson.dumps(call["arguments"]).decode()
            n_at = body.index(name_json) + 1
            a_at = body.index(args_json, n_at)
            spans.append(
                {
                    "kind": "tool_name",
                    "char_start": pos + n_at,
                    "char_end": pos + n_at + len(call["name"]),
                    "text": call["name"],
                }
            )
            spans.append(
                {
                    "kind": "tool_args",
                    "char_start": pos + a_at,
                    "char_end": pos + a_at + len(args_json),
                    "text": args_json,
                }
            )
            clean.append(body)
            pos += len(body)
            i = end + len("</tool_call>")
        elif text.startswith("<int>", i):
            end = text.index("</int>", i)
            body = text[i + len("<int>") : end]
            spans.append({"kind": "integration", "char_start": pos, "char_end": pos + len(body), "text": body})
            clean.append(body)
            pos += len(body)
            i = end + len("</int>")
        else:
            nxt = [j for j in (text.find("<tool_call>", i), text.find("<int>", i)) if j >= 0]
            stop = min(nxt) if nxt else len(text)
            clean.append(text[i:stop])
            pos += stop - i
            i = stop
    return "".join(clean), spans
