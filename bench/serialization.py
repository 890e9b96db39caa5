"""Serialization + compression cost of the worker's sink, per 100k ~1 KB documents.

Run:  .venv/bin/python bench/serialization.py [--docs 100000]

Measures CPU seconds (process_time, single thread) for each stage the sink
adds per document, next to json.loads of the same pages (a lower bound of
what the Cosmos SDK itself spends parsing each change-feed page) and the
worker's replacement parser (sdk_json: msgspec, from the body's bytes), so the
overhead ratio of the export over a bare read can be judged.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from typing import Any

from cosmos_export import jsonl, sdk_json
from cosmos_export.schema import SchemaTracker

PAGE = 1000


def make_docs(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(2000)]
    words += ["Zürich", "naïve", "東京", "😀emoji", "Ελλάδα"]
    docs = []
    for i in range(n):
        doc = {
            "id": f"order-{i:08d}",
            "pk": f"customer-{rng.randint(0, 5000):05d}",
            "status": rng.choice(["new", "paid", "shipped", "cancelled"]),
            "total": round(rng.uniform(1, 5000), 2),
            "quantity": rng.randint(1, 50),
            "express": rng.random() < 0.3,
            "note": None if rng.random() < 0.5 else " ".join(rng.choices(words, k=12)),
            "customer": {
                "name": " ".join(rng.choices(words, k=2)),
                "email": f"{rng.choice(words)}@example.com",
                "address": {
                    "street": " ".join(rng.choices(words, k=3)),
                    "city": rng.choice(words),
                    "zip": f"{rng.randint(10000, 99999)}",
                },
            },
            "items": [
                {
                    "sku": f"SKU-{rng.randint(0, 99999):05d}",
                    "qty": rng.randint(1, 5),
                    "price": round(rng.uniform(1, 500), 2),
                }
                for _ in range(rng.randint(2, 6))
            ],
            "tags": rng.choices(words, k=rng.randint(1, 5)),
            "description": " ".join(rng.choices(words, k=40)),
            "_rid": "".join(rng.choices(string.ascii_letters + string.digits, k=20)) + "==",
            "_self": f"dbs/abc==/colls/def=/docs/{i}==/",
            "_etag": f'"{rng.getrandbits(64):016x}-0000-0000-0000-000000000000"',
            "_attachments": "attachments/",
            "_ts": 1700000000 + i,
            "_lsn": i + 1,
        }
        docs.append(doc)
    return docs


def cpu(fn) -> tuple[float, float, Any]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.process_time() - cpu0, time.perf_counter() - wall0, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    args = parser.parse_args()
    docs = make_docs(args.docs)
    pages = [docs[i : i + PAGE] for i in range(0, len(docs), PAGE)]
    page_bytes = [jsonl.encode_lines(p) for p in pages]
    # What the SDK parses: one JSON body per page ({"Documents": [...]})
    bodies = [json.dumps({"_rid": "x", "Documents": p, "_count": len(p)}, ensure_ascii=False).encode() for p in pages]
    raw = sum(len(b) for b in page_bytes)
    per100k = 100_000 / len(docs)
    print(f"{len(docs)} docs, {raw / len(docs):.0f} B/doc avg, {raw / 1e6:.1f} MB of JSON Lines")

    rows = []

    def report(name: str, cpu_s: float, wall_s: float, out_bytes: int | None = None) -> None:
        extra = f"  out {out_bytes / 1e6:7.1f} MB ratio {raw / out_bytes:4.2f}" if out_bytes else ""
        rows.append((name, cpu_s))
        print(
            f"{name:28s} cpu {cpu_s * per100k:6.2f} s/100k  {len(docs) / wall_s:9.0f} docs/s  "
            f"{raw / wall_s / 1e6:7.1f} MB/s{extra}"
        )

    c, w, _ = cpu(lambda: [json.loads(b) for b in bodies])
    report("baseline json.loads (SDK)", c, w)
    baseline = c
    # As the SDK reads: it decodes each body to str for its parser (stock), or hands over the bytes (sdk_json
    # installed); each page is dropped before the next one.
    for name, parse in (
        ("SDK parse, decode + json.loads", lambda b: json.loads(b.decode())),
        ("SDK parse, decode + msgspec", lambda b: sdk_json.loads(b.decode())),
        ("SDK parse, sdk_json (worker)", sdk_json.loads),
    ):
        c, w, _ = cpu(lambda: sum(len(parse(b)["Documents"]) for b in bodies))  # noqa: B023  # run in this iteration
        report(name, c, w)
    c, w, ref = cpu(lambda: [jsonl.encode_lines_stdlib(p) for p in pages])
    report("serialize stdlib json", c, w)
    c, w, out = cpu(lambda: [jsonl.encode_lines(p) for p in pages])
    same = sum(a == b for a, b in zip(out, ref))
    report(f"serialize sink ({same}/{len(pages)} pages byte-equal)", c, w)
    serialize = c

    def observe_all():
        t = SchemaTracker()
        for d in docs:
            t.observe(d)
        return t

    c, w, _ = cpu(observe_all)
    report("schema observe", c, w)

    def sink_path():
        # What FeedRangeSink does per document: one walk (schema + float check), then orjson or stdlib.
        t = SchemaTracker()
        return [b"\n".join(jsonl.line_bytes(d, t.observe(d)) for d in p) + b"\n" for p in pages]

    c, w, out = cpu(sink_path)
    same = sum(a == b for a, b in zip(out, ref))
    report(f"sink serialize+schema ({same}/{len(pages)} equal)", c, w)
    serialize, schema_cost = c, 0.0
    for comp, level in (("gzip", 1), ("gzip", 6), ("zstd", 1), ("zstd", 3)):

        def run():
            comp_obj = jsonl.new_compressor(comp, level)  # noqa: B023  # run() is called in this iteration
            n = 0
            for b in page_bytes:
                n += len(comp_obj.compress(b))
            return n + len(comp_obj.flush())

        c, w, n = cpu(run)
        report(f"{comp} level {level}", c, w, n)
        total = serialize + schema_cost + c
        print(
            f"    sink total (serialize+schema+{comp}-{level}) = {total * per100k:.2f} CPU s/100k, "
            f"{total / baseline:.2f}x of json.loads alone"
        )


if __name__ == "__main__":
    main()
