"""A schema-aware loopback chat server standing in for an evalset's planner, worker and judge (tests, bench).

It follows rules of the test's own, independent of datamill:

- a request whose JSON schema has ``categories`` is the planner's: the reply plans three categories
  whose counts are in the ratio 2 : 2 : 1 (so 500 cases are 200, 200 and 100);
- a worker request (one case, or ``Item N:`` items of a packed batch) gets, per item, a case built
  from the item's ``Case seed`` and the category named in the system prompt. Cases are drawn from
  a small space of sentence shapes, so structural duplicates (same shape, other numbers and names)
  are common and dedup has work to do;
- a request whose schema has ``score`` is the judge's: a score in the schema's range.

Every answer is a pure function of the request, so reruns are byte-identical. The server records
every request: how often each was asked, the planner's requests, and whether a worker request
carried the text of any case the server had written before (it must not: fresh context).
"""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import threading
import time
from collections import Counter
from typing import Any

import orjson

PACK = re.compile(r"You will get (\d+) numbered items")
ITEM = re.compile(r"^Item (\d+):\n", re.M)
SEED = re.compile(r"Case seed: (\d+)")
CATEGORY = re.compile(r"Category (\w+):")
PLAN = [("Order Status", 2), ("refunds", 2), ("product info", 1)]  # names to be normalised by the planner step

NAMES = ["Maria", "Peter", "Aiko", "Tomas", "Lena", "Omar", "Grace", "Ivan"]
PRODUCTS = ["headphones", "kettle", "backpack", "lamp", "keyboard", "jacket", "blender", "monitor"]
OPENERS = ["Hi,", "Hello,", "Good morning,", "Hey there,", "Excuse me,", "Quick question:", "Sorry to bother you,",
           "Dear support,", "Hi team,", "Greetings,"]  # fmt: skip
ASKS = {
    "order_status": [
        "where is my order {n}",
        "has order {n} shipped yet",
        "when will order {n} arrive",
        "can you track order {n} for {name}",
        "why is order {n} late",
        "is order {n} still processing",
        "order {n} says delivered but I have nothing",
        "what carrier has order {n}",
        "can I change the address of order {n}",
        "is there an update on order {n}",
    ],
    "refunds": [
        "I want a refund for order {n}",
        "how do I return the {product} from order {n}",
        "my refund for order {n} has not arrived",
        "can {name} get a refund for order {n}",
        "the {product} broke, refund order {n} please",
        "is order {n} eligible for a refund",
        "I was charged twice for order {n}",
        "cancel order {n} and refund me",
        "how long does a refund for order {n} take",
        "refund the shipping on order {n}",
    ],
    "product_info": [
        "tell me about the {product}",
        "is the {product} waterproof",
        "what colours does the {product} come in",
        "does the {product} have a warranty",
        "how heavy is the {product}",
        "is the {product} in stock in size {n}",
        "compare the {product} and the {product2}",
        "what is the {product} made of",
        "can {name} use the {product} abroad",
        "what does the {product} cost",
    ],
}
CLOSERS = ["Thanks.", "Thank you!", "Cheers.", "Regards.", "Much appreciated.", "Please help.", "ASAP please.",
           "Thanks in advance.", "Have a nice day.", "Bye."]  # fmt: skip


def make_case(category: str, seed: int) -> dict[str, Any]:
    rng = random.Random(f"{category}:{seed}")
    ask = rng.choice(ASKS.get(category, ASKS["product_info"]))
    text = ask.format(n=rng.randint(10000, 99999), name=rng.choice(NAMES), product=rng.choice(PRODUCTS),
                      product2=rng.choice(PRODUCTS))  # fmt: skip
    return {
        "input": f"{rng.choice(OPENERS)} {text}? {rng.choice(CLOSERS)}",
        "expectations": [f"addresses the {category.replace('_', ' ')} request", "stays polite"],
    }


def _schema(payload: dict[str, Any]) -> dict[str, Any] | None:
    fmt = payload.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return dict(fmt["json_schema"]["schema"])
    if "schema" in fmt:
        return dict(fmt["schema"])
    for m in payload.get("messages", []):
        text = m.get("content") or ""
        for marker in ("matches this JSON schema:\n", "match this JSON schema:\n"):
            if marker in text:
                return dict(orjson.loads(text.split(marker, 1)[1].split("\n", 1)[0]))
    return None


class EvalServer:
    def __init__(self, latency_s: float = 0.0, planner_latency_s: float = 0.0, bad_planner: bool = False) -> None:
        self.bad_planner = bad_planner
        self.latency_s = latency_s
        self.planner_latency_s = planner_latency_s
        self.lock = threading.Lock()
        self.asked: Counter[str] = Counter()
        self.planner_requests = 0
        self.planner_in_flight = 0
        self.in_flight = 0
        self.models: Counter[str] = Counter()
        self.written: list[str] = []  # every case input this server has written, in order
        self.leaks: list[str] = []  # worker requests that carried an earlier case's text
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = server.answer(body)
                out = orjson.dumps({"id": "e", "object": "chat.completion", "model": body.get("model"),
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": content}}],
                                    "usage": {"prompt_tokens": 50, "completion_tokens": 20}})  # fmt: skip
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the client was killed

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 drops SYNs under 64 concurrent requests (1 s retransmits)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, payload: dict[str, Any]) -> str:
        messages = payload.get("messages", [])
        key = hashlib.sha256(orjson.dumps([messages, payload.get("seed"), payload.get("model")])).hexdigest()
        schema = _schema(payload) or {}
        props = schema.get("properties", {})
        system = " ".join(m.get("content") or "" for m in messages if m.get("role") == "system")
        text = "\n".join(m.get("content") or "" for m in messages)
        with self.lock:
            self.asked[key] += 1
            self.models[str(payload.get("model"))] += 1
            self.in_flight += 1
        try:
            if "categories" in props:
                with self.lock:
                    self.planner_requests += 1
                    self.planner_in_flight += 1
                try:
                    time.sleep(self.planner_latency_s)
                    return self._plan(props["categories"])
                finally:
                    with self.lock:
                        self.planner_in_flight -= 1
            time.sleep(self.latency_s)
            if "score" in props or '"score"' in system:
                score = props.get("score", {})
                lo, hi = score.get("minimum", 1), score.get("maximum", 5)
                return self._judge(messages, key, lo, hi)
            return self._cases(system, messages, text)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _plan(self, schema: dict[str, Any]) -> str:
        if self.bad_planner:
            return '{"categories": "none, sorry"}'
        names = schema["items"]["properties"]["name"].get("enum")  # hinted: exactly those names
        plan = [(n, 1) for n in names] if names else PLAN
        cats = [{"name": name, "description": f"tests {name.lower()} questions", "count": w * 10,
                 "example_inputs": [f"a question about {name.lower()}"], "expectations": ["answers it"]}
                for name, w in plan]  # fmt: skip
        return orjson.dumps({"categories": cats}).decode()

    def _judge(self, messages: list[dict[str, Any]], key: str, lo: int, hi: int) -> str:
        system = " ".join(m.get("content") or "" for m in messages if m.get("role") == "system")
        pack = PACK.search(system)
        if pack:
            k = int(pack.group(1))
            answers = [{"id": i, "answer": {"score": lo + int(key[i], 16) % (hi - lo + 1), "reason": "fine"}}
                       for i in range(1, k + 1)]  # fmt: skip
            return orjson.dumps({"answers": answers}).decode()
        return orjson.dumps(
            {"score": lo + int(key[:4], 16) % (hi - lo + 1), "reason": "specific and checkable"}
        ).decode()

    def _cases(self, system: str, messages: list[dict[str, Any]], text: str) -> str:
        m = CATEGORY.search(system)
        category = m.group(1) if m else "unknown"
        with self.lock:
            if any(w in text for w in self.written):
                self.leaks.append(text[:200])
        pack = PACK.search(system)
        user = messages[-1].get("content", "")
        if pack:
            items = ITEM.split(user)[1:]
            answers: list[dict[str, Any]] = []
            cases: list[dict[str, Any]] = []
            for i in range(0, len(items) - 1, 2):
                seed = SEED.search(items[i + 1])
                cases.append(make_case(category, int(seed.group(1)) if seed else 0))
                answers.append({"id": int(items[i]), "answer": cases[-1]})
            with self.lock:
                self.written.extend(c["input"] for c in cases)
            return orjson.dumps({"answers": answers}).decode()
        seed = SEED.search(user)
        case = make_case(category, int(seed.group(1)) if seed else 0)
        with self.lock:
            self.written.append(case["input"])
        return orjson.dumps(case).decode()

    def repeated(self) -> int:
        """Requests asked more than once (the extra askings)."""
        return sum(n - 1 for n in self.asked.values() if n > 1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
