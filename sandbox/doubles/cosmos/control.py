"""HTTP control endpoints (`/_double/...`) so another process can drive the double.

POST /_double/containers   {"db","container","partition_key_path"? ("/pk" or ["/a","/b"]: hierarchical),
                            "kind"?, "version"?, "feed_ranges"?, "default_ttl"?}
POST /_double/clock        {"advance_seconds": n}: the account's clock moves on, TTL expiries happen
POST /_double/seed?db=&container=   NDJSON body, one document per line
POST /_double/upsert?db=&container= one JSON document
POST /_double/delete       {"db","container","id","partition_key"}
POST /_double/split        {"db","container","range_id"?}
POST /_double/faults       {"kind": "throttle"|"unavailable"|"reset", "n", "operation"?, "retry_after_ms"?}
                           {"kind": "not_modified", "db","container","range_id","seconds"}
                           {"kind": "not_propagated", "seconds"} | {"kind": "clear"}
POST /_double/latency      {"ms": 20}: round-trip delay added to every data-plane response (0: none)
GET  /_double/stats        request counts by operation and status
"""

from __future__ import annotations

import json
from typing import Any

_ROUTES = ("containers", "seed", "upsert", "delete", "split", "faults", "latency", "stats", "clock")


def _one(query: dict[str, list[str]], spec: dict, name: str) -> Any:
    if name in spec:
        return spec[name]
    if name in query:
        return query[name][0]
    raise ValueError(f"missing field {name!r}")


def handle_control(state, method: str, parts: list[str], query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
    route = parts[0] if parts else ""
    if route not in _ROUTES:
        return 404, {"error": f"unknown control endpoint /_double/{route}; one of {', '.join(_ROUTES)}"}
    try:
        if route == "stats":
            return 200, state.stats_dict()
        if method != "POST":
            return 405, {"error": f"/_double/{route} takes POST"}
        if route == "seed":
            db, container = _one(query, {}, "db"), _one(query, {}, "container")
            docs = (json.loads(line) for line in body.splitlines() if line.strip())
            return 200, {"upserted": state.upsert_many(db, container, docs)}
        if route == "latency":
            return 200, {"latency_ms": set_latency(state, _one(query, json.loads(body or b"{}"), "ms"))}
        if route == "upsert":
            return 200, state.upsert(_one(query, {}, "db"), _one(query, {}, "container"), json.loads(body))
        spec = json.loads(body or b"{}")
        if not isinstance(spec, dict):
            raise ValueError("the body must be a JSON object")
        if route == "containers":
            created = state.create_container(
                _one(query, spec, "db"),
                _one(query, spec, "container"),
                spec.get("partition_key_path", "/pk"),
                int(spec.get("feed_ranges", 4)),
                kind=spec.get("kind"),
                version=int(spec.get("version", 2)),
            )
            if spec.get("default_ttl") is not None:
                created.properties["defaultTtl"] = int(spec["default_ttl"])
            return 201, {"rid": created.rid, "ranges": [r.id for r in created.ranges]}
        if route == "clock":
            expired = state.advance_clock(float(_one(query, spec, "advance_seconds")))
            return 200, {"now": state.now(), "expired": expired}
        if route == "delete":
            found = state.delete(
                _one(query, spec, "db"),
                _one(query, spec, "container"),
                _one(query, spec, "id"),
                _one(query, spec, "partition_key"),
            )
            return (200, {"deleted": True}) if found else (404, {"error": "no such document"})
        if route == "split":
            return 200, {
                "new_ranges": state.split(_one(query, spec, "db"), _one(query, spec, "container"), spec.get("range_id"))
            }
        kind = _one(query, spec, "kind")
        if kind in ("throttle", "unavailable", "reset"):
            n, operation = int(_one(query, spec, "n")), spec.get("operation")
            if kind == "throttle":
                state.throttle_next(n, retry_after_ms=int(spec.get("retry_after_ms", 10)), operation=operation)
            elif kind == "unavailable":
                state.unavailable_next(n, operation=operation)
            else:
                state.reset_next(n, operation=operation)
        elif kind == "not_modified":
            state.not_modified_for(spec["db"], spec["container"], str(spec["range_id"]), float(spec["seconds"]))
        elif kind == "not_propagated":
            state.not_propagated_for(float(_one(query, spec, "seconds")))
        elif kind == "clear":
            state.clear_faults()
        else:
            raise ValueError(
                f"fault kind {kind!r} is not one of throttle, unavailable, reset, not_modified, not_propagated, clear"
            )
        return 200, {"ok": True}
    except KeyError as exc:
        return 404, {"error": str(exc.args[0]) if exc.args else "not found"}
    except ValueError as exc:
        return 400, {"error": str(exc)}


def set_latency(state, ms: Any) -> float:
    """Set the double's round-trip delay in milliseconds (0..10000); returns it."""
    value = float(ms)
    if not 0 <= value <= 10_000:
        raise ValueError(f"latency ms={ms!r} must be between 0 and 10000")
    state.latency_seconds = value / 1000
    return value
