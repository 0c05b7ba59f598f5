"""Built-in recipe ``contextual``: prompts that teach a student to use tools and context (seed 000).

One slot is one item. Its ``length`` bucket (short / mixed / long) is a quota in the recipe, so
long-context items are an exact share of the plan; its ``scenario`` depends on the bucket. Each
item is a scenario whose parts agree (pools and phrasings: :mod:`.pools`):

- ``passage``: numbered passages, of which the key ones, and only they, answer the user's
  question; the others are hard negatives (the same topic and measure in another year or place,
  another measure of the same place and year, another topic of the same place). The teacher cites
  exactly the answering passages, one integration span per fact asked.
- ``tool_single`` / ``tool_multi``: the prompt lists tool schemas and states user needs; the
  teacher calls the tool each need names, with arguments taken from the question, the tool's
  result follows as the next turn, and the answer integrates the facets the need asked for.
- ``control`` (no context) and ``negative_control`` (context that must not be used).

The prompt is ``instruction``, the context sections (``Passages:`` / ``Tools:``), background
records grown to the bucket's token range, and last the question on a line ``User: ...``.

Teacher text markup (machine-parseable, see :func:`parse_teacher`):

- a tool call: ``<tool_call>{"name": "...", "arguments": {...} }</tool_call>`` (JSON)
- the tool's result, right after its call: ``<tool_result>{...}</tool_result>`` (a JSON object)
- an integration span (a part that uses a fact from the context): ``<int>...</int>``

Eligible items (tool and passage scenarios) carry 1..``integration_span_cap`` spans, as many as
the question asks for (never padded); controls and negative controls carry none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from datamill.columns import GeneratorContext
from datamill.recipes.contextual.pools import (
    ANSWER_TEMPLATES,
    CITE_TEMPLATES,
    CONDITIONS,
    CURRENCIES,
    FLIGHT_STATES,
    FOLLOWUP_TEMPLATES,
    PARCEL_STATES,
    PASSAGE_INSTRUCTIONS,
    PASSAGE_TEMPLATES,
    QUESTION_TEMPLATES,
    TOOL_CLOSERS,
    TOOL_INSTRUCTIONS,
    TOOLS,
    TOPICS,
    WET_CONDITIONS,
)

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
INT_SPAN = re.compile(r"<int>(.*?)</int>", re.S)
TOOL_RESULT = re.compile(r"<tool_result>(.*?)</tool_result>", re.S)
MARKUP = re.compile(r"</?int>|</?tool_call>|</?tool_result>")

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
_TOPIC_NAMES = sorted(TOPICS)
_SYMBOL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"

PASSAGES_HEADER = "Passages:"
TOOLS_HEADER = "Tools:"
USER_PREFIX = "User: "
LLM_TOOL_INSTRUCTION = "The tools the user's request needs were called; their results follow. Answer from them."


def _name(rng: Any, parts: int = 2) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def _fact_text(template: str, fact: dict[str, Any]) -> str:
    text = template.format(**fact)
    return text[0].upper() + text[1:]


def _fact(topic: str, place: str, year: int, measure: tuple[str, str, int, int], value: int) -> dict[str, Any]:
    """A passage fact; ``a_measure`` is the measure with its article, for the templates."""
    article = "an" if measure[0][0] in "aeiou" else "a"
    return {"topic": topic, "place": place, "year": year, "measure": measure[0], "a_measure": f"{article} {measure[0]}",
            "unit": measure[1], "value": value}  # fmt: skip


def _random_fact(rng: Any, topic: str, place: str | None = None) -> dict[str, Any]:
    m = rng.choice(TOPICS[topic])
    return _fact(topic, place or _name(rng), rng.randint(1950, 2024), m, rng.randint(m[2], m[3]))


def _filler(rng: Any, target_chars: int, avoid: frozenset[str] = frozenset()) -> str:
    """Background records: passage-like sentences about topics other than ``avoid``."""
    topics = [t for t in _TOPIC_NAMES if t not in avoid]
    paras, size = [], 0
    while size < target_chars:
        para = " ".join(
            _fact_text(rng.choice(PASSAGE_TEMPLATES), _random_fact(rng, rng.choice(topics)))
            for _ in range(rng.randint(3, 7))
        )
        paras.append(para)
        size += len(para) + 2
    return "\n\n".join(paras)


def _target_chars(rng: Any, bucket: str) -> int:
    lo, hi = BUCKET_TOKENS[bucket]
    # Mixed items lean long at the top, so the 90th percentile of the run reaches 8k+ tokens.
    return int(rng.uniform(lo, hi) * CHARS_PER_TOKEN)


class _Scenario:
    """What one item says: instruction, context sections, the user's question and the teacher text."""

    def __init__(self) -> None:
        self.instruction = ""
        self.sections: list[str] = []  # context before the background records
        self.question = ""
        self.teacher = ""
        self.template = ""  # the question templates used, joined with "+"
        self.prefix = ""  # the teacher's turns before its answer: tool calls and their results
        self.results: list[str] = []  # the tool results, as JSON lines
        self.avoid: frozenset[str] = frozenset()  # topics the background must not touch


def _passage_scenario(rng: Any, spans: int) -> _Scenario:
    """Key passages answer the question; hard negatives differ from a key in one of place, year, measure."""
    sc = _Scenario()
    topic = rng.choice(_TOPIC_NAMES)
    measures = TOPICS[topic]
    place = _name(rng)
    shape = rng.choice(["single", "series", "facets"]) if spans > 1 else "single"
    year = rng.randint(1950, 2024)
    if shape == "facets":
        chosen = rng.sample(measures, min(spans, len(measures)))
        keys = [(place, year, m) for m in chosen]
    else:
        years = sorted(rng.sample(range(1950, 2025), spans if shape == "series" else 1))
        m = rng.choice(measures)
        keys = [(place, y, m) for y in years]
    key_facts = [_fact(topic, p, y, m, rng.randint(m[2], m[3])) for p, y, m in keys]
    asked = {(f["place"], f["year"], f["measure"]) for f in key_facts}
    asked_years = {f["year"] for f in key_facts}
    asked_measures = {f["measure"] for f in key_facts}
    negatives: list[dict[str, Any]] = []
    for (p, y, m), f in zip(keys, key_facts, strict=True):
        kinds = ["year", "place"] + (["measure"] if len(asked_measures) < len(measures) else [])
        for kind in rng.sample(kinds, rng.randint(1, len(kinds))):
            if kind == "year":
                y2 = rng.choice([x for x in range(1950, 2025) if x not in asked_years])
                neg = _fact(topic, p, y2, m, rng.randint(m[2], m[3]))
            elif kind == "place":
                p2 = _name(rng)
                while p2 == place:
                    p2 = _name(rng)
                neg = _fact(topic, p2, y, m, rng.randint(m[2], m[3]))
            else:
                m2 = rng.choice([x for x in measures if x[0] not in asked_measures])
                neg = _fact(topic, p, y, m2, rng.randint(m2[2], m2[3]))
            if (neg["place"], neg["year"], neg["measure"]) not in asked and neg["value"] != f["value"]:
                negatives.append(neg)
    # a passage or two from another topic in the same place and year: near in words, no answer
    for _ in range(rng.randint(0, 2)):
        negatives.append(_random_fact(rng, rng.choice([t for t in _TOPIC_NAMES if t != topic]), place) | {"year": year})
    passages = [(f, True) for f in key_facts] + [(f, False) for f in negatives]
    rng.shuffle(passages)
    numbered = {id(f): i + 1 for i, (f, _) in enumerate(passages)}
    sc.sections.append(
        PASSAGES_HEADER + "\n" + "\n".join(
            f"[{i + 1}] {_fact_text(rng.choice(PASSAGE_TEMPLATES), f)}" for i, (f, _) in enumerate(passages)
        )
    )  # fmt: skip
    sc.instruction = rng.choice(PASSAGE_INSTRUCTIONS)
    first_id, first = rng.choice(QUESTION_TEMPLATES)
    parts = [_fact_text(first, key_facts[0])]
    ids = [first_id]
    for f in key_facts[1:]:
        fid, follow = rng.choice(FOLLOWUP_TEMPLATES)
        parts.append(_fact_text(follow, f))
        ids.append(fid)
    sc.question = " ".join(parts)
    sc.template = "passage:" + "+".join(ids)
    cites = []
    for f in key_facts:
        span = f"<int>{rng.choice(ANSWER_TEMPLATES).format(**f)}</int>"
        cites.append(_fact_text(rng.choice(CITE_TEMPLATES), {"n": numbered[id(f)], "span": span}))
    sc.teacher = " ".join(cites)
    sc.avoid = frozenset({topic})
    return sc


def _tool_args(rng: Any, name: str) -> dict[str, Any]:
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if name in ("get_weather", "get_sun_times"):
        return {"city": _name(rng), "date": date}
    if name == "get_stock_price":
        return {"symbol": "".join(rng.choice(_SYMBOL_LETTERS) for _ in range(4))}
    if name == "convert_currency":
        frm, to = rng.sample(CURRENCIES, 2)
        return {"amount": rng.randint(10, 5000), "from": frm, "to": to}
    if name == "get_flight_status":
        return {"flight": f"{rng.choice(_SYMBOL_LETTERS)}{rng.choice(_SYMBOL_LETTERS)}{rng.randint(100, 9999)}"}
    if name == "get_package_status":
        return {"tracking_id": f"PK{rng.randint(10**7, 10**8 - 1)}"}
    if name == "get_route":
        origin = _name(rng)
        dest = _name(rng)
        while dest == origin:
            dest = _name(rng)
        return {"origin": origin, "destination": dest}
    return {"city": _name(rng)}  # lookup_population, get_air_quality, get_local_time


def _tool_result(rng: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """What the tool returns for ``args``: it echoes the request's subject, then the values."""
    if name == "get_weather":
        condition = rng.choice(CONDITIONS)
        wet = condition in WET_CONDITIONS  # precipitation only with a wet condition
        return {**args, "temp_c": rng.randint(-10, 35), "condition": condition,
                "precip_mm": round(rng.uniform(0.5, 30), 1) if wet else 0.0}  # fmt: skip
    if name == "get_stock_price":
        return {**args, "price": round(rng.uniform(5, 900), 2), "change_pct": round(rng.uniform(-9, 9), 2)}
    if name == "lookup_population":
        return {**args, "population": rng.randint(2_000, 9_000_000), "census_year": rng.randint(2010, 2024)}
    if name == "convert_currency":
        rate = round(rng.uniform(0.2, 3.0), 4)
        return {**args, "rate": rate, "result": round(args["amount"] * rate, 2)}
    if name == "get_flight_status":
        status = rng.choice(FLIGHT_STATES)
        delay = rng.randint(15, 240) if status == "delayed" else 0  # only a delayed flight runs late
        return {**args, "status": status, "gate": f"{rng.choice('ABCDEF')}{rng.randint(1, 60)}", "delay_min": delay}
    if name == "get_air_quality":
        return {**args, "aqi": rng.randint(5, 300), "pm25": round(rng.uniform(1, 150), 1)}
    if name == "get_package_status":
        return {
            **args,
            "status": rng.choice(PARCEL_STATES),
            "eta": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        }
    if name == "get_local_time":
        return {
            **args,
            "local_time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
            "utc_offset": rng.randint(-11, 12),
        }
    if name == "get_route":
        km = rng.randint(5, 1500)
        return {**args, "km": km, "minutes": int(km * rng.uniform(0.7, 1.4)) + 5}
    return {**args, "sunrise": f"0{rng.randint(4, 8)}:{rng.randint(0, 59):02d}",
            "sunset": f"{rng.randint(16, 21)}:{rng.randint(0, 59):02d}"}  # fmt: skip  # get_sun_times


def tool_schema(name: str) -> dict[str, Any]:
    """The JSON schema line a prompt lists for tool ``name``."""
    spec = TOOLS[name]
    params: dict[str, str] = spec["parameters"]
    return {"name": name, "description": spec["description"],
            "parameters": {"type": "object", "properties": {k: {"type": t} for k, t in params.items()},
                           "required": list(params)}}  # fmt: skip


def _tool_scenario(rng: Any, n_tools: int, cap: int) -> _Scenario:
    """A user need per tool; the teacher calls the tool with arguments from the need, reads the result, answers."""
    sc = _Scenario()
    names = rng.sample(sorted(TOOLS), n_tools)
    others = rng.sample([t for t in sorted(TOOLS) if t not in names], rng.randint(2, 4))
    listed = names + others
    rng.shuffle(listed)
    sc.sections.append(TOOLS_HEADER + "\n" + "\n".join(orjson.dumps(tool_schema(t)).decode() for t in listed))
    sc.instruction = rng.choice(TOOL_INSTRUCTIONS)
    # Each need asks for some facets of its result: at least one span per tool, then the rest in
    # order of importance while the cap allows. Never a span the need did not ask for.
    chosen = []
    for name in names:
        j = rng.randrange(len(TOOLS[name]["needs"]))
        chosen.append((name, j, TOOLS[name]["needs"][j][1]))
    budget = cap - len(names)
    needs, ids, turns, answer = [], [], [], []
    for name, j, facet_ids in chosen:
        spec = TOOLS[name]
        take = min(len(facet_ids), 1 + budget)
        budget -= take - 1
        args = _tool_args(rng, name)
        result = _tool_result(rng, name, args)
        needs.append(spec["needs"][j][0].format(**args))
        ids.append(f"{name}.{j}")
        # A space before the closing brace keeps the arguments object on token boundaries.
        call = f'{{"name": {orjson.dumps(name).decode()}, "arguments": {orjson.dumps(args).decode()} }}'
        turns.append(f"<tool_call>{call}</tool_call>\n<tool_result>{orjson.dumps(result).decode()}</tool_result>")
        sc.results.append(orjson.dumps(result).decode())
        answer += [f"<int>{spec['facets'][k].format(**result)}</int>" for k in facet_ids[:take]]
    sc.question = " ".join(needs)
    sc.template = "tool:" + "+".join(ids)
    lead = rng.choice(["Here is what I found: ", "From the results, ", "The tools say ", "Per the results, "])
    sc.prefix = "\n".join(turns) + "\n"
    sc.teacher = sc.prefix + lead + "; ".join(answer) + "." + rng.choice(TOOL_CLOSERS)
    return sc


def generate(ctx: GeneratorContext) -> Iterator[dict[str, Any]]:
    rng = ctx.rng
    inputs = ctx.inputs
    scenario, bucket = inputs["scenario"], inputs["length"]
    cap = int(ctx.params.get("integration_span_cap", 3))
    if bucket == "long" and (ctx.params.get("disable_long_context") or ctx.size < 20):
        bucket = "mixed"  # no long context below N = 20, nor when disabled
    spans = rng.randint(1, cap)
    if scenario in ("tool_single", "tool_multi"):
        n_tools = 1 if scenario == "tool_single" else max(1, min(rng.randint(2, 3), cap))
        sc = _tool_scenario(rng, n_tools, max(cap, n_tools))
    elif scenario == "passage":
        sc = _passage_scenario(rng, spans)
    else:
        sc = _Scenario()
        topic = rng.choice(_TOPIC_NAMES)
        sc.avoid = frozenset({topic})
        if scenario == "negative_control":
            fact = _random_fact(rng, rng.choice([t for t in _TOPIC_NAMES if t != topic]))
            sc.sections.append(
                "Passages (unrelated to the question; do not use them):\n"
                + _fact_text(rng.choice(PASSAGE_TEMPLATES), fact)
            )
            sc.instruction = "Answer in general terms. Do not use the passages."
            sc.question = f"Why does {topic} matter to a town like {_name(rng)}?"
            sc.template = "negative_control"
            sc.teacher = (f"Speaking generally rather than from the passages, {topic} matters because it shapes "
                          f"how places like {_name(rng)} work.")  # fmt: skip
        else:  # control: nothing to integrate
            sc.instruction = "Answer briefly."
            sc.question = f"Write two sentences about {topic} around {_name(rng, 3)}."
            sc.template = "control"
            sc.teacher = (
                f"{topic.capitalize()} has a long history around {_name(rng, 3)}. People there still speak of it often."
            )
    head = sc.instruction + "".join("\n\n" + s for s in sc.sections)
    tail = "\n\n" + USER_PREFIX + sc.question
    if sc.sections:
        want = _target_chars(rng, bucket)
        if len(head) + len(tail) < want:
            head += "\n\nBackground records:\n" + _filler(rng, want - len(head) - len(tail), sc.avoid)
    if bucket == "long" and ctx.params.get("tokenizer_check", True):
        head = _grow_to_tokens(rng, head, tail, ctx.params.get("tokenizer"), sc.avoid)
    record = {
        # The slot's shard in the canonical layout of ``shard_count`` shards: the same whatever
        # --num-shards the run used, and equal to --shard-index when the run used that layout.
        "shard_index": ctx.slot * int(ctx.params.get("shard_count", 10)) // max(1, ctx.size),
        "scenario": scenario,
        "prompt": head + tail,
        "teacher_text": sc.teacher,
        "control": scenario == "control",
        "negative_control": scenario == "negative_control",
        "long_context": bucket == "long",
        "question_template": sc.template,
    }
    if ctx.params.get("llm_teacher"):
        record["teacher_brief"], record["teacher_prefix"] = _brief(sc), sc.prefix
    yield record


def _brief(sc: _Scenario) -> str:
    """What a model writing the teacher's answer sees: the scenario without background records.

    For tool items the calls are made already (``teacher_prefix``): the brief gives their results.
    """
    if sc.results:
        parts = [LLM_TOOL_INSTRUCTION, "Tool results:\n" + "\n".join(sc.results)]
    else:
        parts = [sc.instruction, *sc.sections]
    return "\n\n".join([*parts, USER_PREFIX + sc.question])


def _grow_to_tokens(rng: Any, head: str, tail: str, tokenizer: str | None, avoid: frozenset[str]) -> str:
    """Append background paragraphs to ``head`` until ``head + tail`` has at least LONG_MIN_TOKENS tokens."""
    from datamill.tokenize import TokenCounter

    counter = _COUNTERS.get(tokenizer)
    if counter is None:
        counter = _COUNTERS[tokenizer] = TokenCounter(tokenizer)
    while counter.count([head + tail])[0] < LONG_MIN_TOKENS:
        head += "\n\n" + _filler(rng, 2000, avoid)
    return head


_COUNTERS: dict[str | None, Any] = {}


def parse_teacher(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The teacher text without markup, and its marked spans with offsets into that clean text.

    Span kinds: ``tool_name``, ``tool_args`` (the JSON arguments object), ``tool_result`` (the JSON
    object the tool returned: the turn after the call, context rather than the teacher's own words)
    and ``integration``.
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
        elif text.startswith("<int>", i) or text.startswith("<tool_result>", i):
            tag = "int" if text.startswith("<int>", i) else "tool_result"
            end = text.index(f"</{tag}>", i)
            body = text[i + len(tag) + 2 : end]
            kind = "integration" if tag == "int" else "tool_result"
            spans.append({"kind": kind, "char_start": pos, "char_end": pos + len(body), "text": body})
            clean.append(body)
            pos += len(body)
            i = end + len(tag) + 3
        else:
            nxt = [
                j for j in (text.find("<tool_call>", i), text.find("<int>", i), text.find("<tool_result>", i)) if j >= 0
            ]
            stop = min(nxt) if nxt else len(text)
            clean.append(text[i:stop])
            pos += stop - i
            i = stop
    return "".join(clean), spans
