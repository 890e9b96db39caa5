"""The subset of Cosmos DB SQL the double answers.

`SELECT * FROM c [WHERE <filter>]`, `SELECT VALUE COUNT(1) FROM c [WHERE ...]`
(and the gateway's rewritten form `SELECT VALUE [{"item": COUNT(1)}] ...`),
where a filter is comparisons (= != <> < <= > >=) between property paths,
literals and @parameters, combined with AND / OR / NOT and parentheses, plus
IS_DEFINED(path). Comparisons follow Cosmos semantics: values of different
types (or a missing property) are undefined, which filters the document out.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Sequence

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<param>@[A-Za-z_][A-Za-z0-9_]*)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[()*.,\[\]{}:])
    )""",
    re.VERBOSE,
)

_UNDEFINED = object()
_KEYWORDS = {"select", "value", "from", "where", "and", "or", "not", "true", "false", "null", "count"}


class QueryError(ValueError):
    pass


@dataclass
class Query:
    text: str
    alias: str
    count: bool  # SELECT VALUE COUNT(1)
    rewritten_count: bool  # the gateway's SELECT VALUE [{"item": COUNT(1)}] form
    where: Any  # expression tree or None
    where_text: str


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"unexpected text at position {pos}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], params: dict[str, Any]):
        self.tokens, self.i, self.params = tokens, 0, params

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        kind, text = self.tokens[self.i]
        return value is None or text.lower() == value.lower()

    def take(self, value: str | None = None) -> str:
        if not self.peek(value):
            got = self.tokens[self.i][1] if self.i < len(self.tokens) else "end of query"
            raise QueryError(f"expected {value or 'a token'}, got {got!r}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def expr(self):
        left = self.conj()
        while self.peek("or"):
            self.take()
            left = ("or", left, self.conj())
        return left

    def conj(self):
        left = self.neg()
        while self.peek("and"):
            self.take()
            left = ("and", left, self.neg())
        return left

    def neg(self):
        if self.peek("not"):
            self.take()
            return ("not", self.neg())
        return self.comparison()

    def comparison(self):
        left = self.operand()
        if self.i < len(self.tokens) and self.tokens[self.i][0] == "op":
            op = self.take()
            return ("cmp", "!=" if op == "<>" else op, left, self.operand())
        return left

    def operand(self):
        if self.i >= len(self.tokens):
            raise QueryError("unexpected end of query")
        kind, text = self.tokens[self.i]
        if text == "(":
            self.take("(")
            inner = self.expr()
            self.take(")")
            return inner
        self.i += 1
        if kind == "number":
            return ("lit", json.loads(text))
        if kind == "string":
            return (
                "lit",
                json.loads('"' + text[1:-1].replace('"', '\\"').replace("\\'", "'") + '"')
                if text[0] == "'"
                else json.loads(text),
            )
        if kind == "param":
            if text not in self.params:
                raise QueryError(f"parameter {text} is not defined in the query parameters")
            return ("lit", self.params[text])
        if kind == "ident":
            low = text.lower()
            if low in ("true", "false", "null"):
                return ("lit", {"true": True, "false": False, "null": None}[low])
            if low == "is_defined":
                self.take("(")
                path = self.operand()
                self.take(")")
                return ("defined", path)
            path = [text]
            while self.peek(".") or self.peek("["):
                if self.take() == ".":
                    path.append(self.take())
                else:
                    key = self.operand()
                    self.take("]")
                    path.append(key[1])
            return ("path", path)
        raise QueryError(f"unexpected {text!r}")


def parse(text: str, params: dict[str, Any] | None = None) -> Query:
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the query text is empty")
    tokens = _tokens(text)
    p = _Parser(tokens, params or {})
    p.take("select")
    count = rewritten = False
    if p.peek("*"):
        p.take()
    elif p.peek("value"):
        p.take()
        if p.peek("["):  # SELECT VALUE [{"item": COUNT(1)}]
            for expected in ("[", "{", '"item"', ":", "count", "(", "1", ")", "}", "]"):
                p.take(expected)
            rewritten = True
        else:
            for expected in ("count", "(", "1", ")"):
                p.take(expected)
        count = True
    else:
        raise QueryError("only SELECT *, SELECT VALUE COUNT(1) are supported")
    p.take("from")
    alias = p.take()
    # `FROM root r` / `FROM c AS x`: the container under another alias (the SDK's read_all_items
    # sends "Select * from root r").
    if p.peek() and not p.peek("where"):
        if p.peek("as"):
            p.take()
        alias = p.take()
    if alias.lower() in _KEYWORDS | {"as"}:
        raise QueryError(f"{alias!r} is not a valid collection alias")
    where, where_text = None, ""
    if p.peek("where"):
        start = p.i
        p.take()
        where = p.expr()
        where_text = " ".join(t for _, t in tokens[start : p.i])
    if p.i != len(tokens):
        raise QueryError(f"unsupported clause starting at {tokens[p.i][1]!r}")
    _check_alias(where, alias)
    return Query(text=text, alias=alias, count=count, rewritten_count=rewritten, where=where, where_text=where_text)


def _check_alias(node, alias: str) -> None:
    if node is None or node[0] == "lit":
        return
    if node[0] == "path":
        if node[1][0] != alias:
            raise QueryError(f"identifier {node[1][0]!r} could not be resolved (the alias is {alias!r})")
        return
    for child in node[1:]:
        if isinstance(child, tuple):
            _check_alias(child, alias)


def _value(node, doc: dict):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        current: Any = doc
        for key in node[1][1:]:
            if isinstance(current, dict) and isinstance(key, str) and key in current:
                current = current[key]
            elif isinstance(current, list) and isinstance(key, int) and 0 <= key < len(current):
                current = current[key]
            else:
                return _UNDEFINED
        return current
    return _truth(node, doc)


def _type_rank(value) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None  # objects/arrays: only equality


def _compare(op: str, a, b):
    if a is _UNDEFINED or b is _UNDEFINED:
        return _UNDEFINED
    ta, tb = _type_rank(a), _type_rank(b)
    if op in ("=", "!="):
        if ta != tb:
            return _UNDEFINED
        return (a == b) if op == "=" else (a != b)
    if ta != tb or ta is None or ta == "null":
        return _UNDEFINED
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _truth(node, doc: dict):
    kind = node[0]
    if kind == "cmp":
        return _compare(node[1], _value(node[2], doc), _value(node[3], doc))
    if kind == "and":
        left, right = _truth(node[1], doc), _truth(node[2], doc)
        if left is False or right is False:
            return False
        return True if left is True and right is True else _UNDEFINED
    if kind == "or":
        left, right = _truth(node[1], doc), _truth(node[2], doc)
        if left is True or right is True:
            return True
        return False if left is False and right is False else _UNDEFINED
    if kind == "not":
        inner = _truth(node[1], doc)
        return (not inner) if isinstance(inner, bool) else _UNDEFINED
    if kind == "defined":
        return _value(node[1], doc) is not _UNDEFINED
    value = _value(node, doc)
    return value if isinstance(value, bool) else _UNDEFINED


def matches(query: Query, doc: dict) -> bool:
    return query.where is None or _truth(query.where, doc) is True


def execute(query: Query, entries: Sequence, after_seq: int, limit: int) -> tuple[list[bytes], int | None]:
    """One page over `entries` (in creation order): JSON bytes of the results and the next continuation seq."""
    if query.count:
        n = sum(1 for e in entries if query.where is None or matches(query, json.loads(e.body)))
        return [json.dumps([{"item": n}] if query.rewritten_count else n).encode()], None
    out: list[bytes] = []
    # Entries are in seq order: start right after the continuation instead of scanning from the
    # first entry on every page (quadratic over a million-document container).
    first = bisect.bisect_right(entries, after_seq, key=attrgetter("seq"))
    for index in range(first, len(entries)):
        entry = entries[index]
        if query.where is not None and not matches(query, json.loads(entry.body)):
            continue
        out.append(entry.body)
        if len(out) == limit:
            more = any(e.seq > entry.seq for e in entries[index + 1 : index + 2]) or index + 1 < len(entries)
            return out, (entry.seq if more else None)
    return out, None


def query_plan(query: Query) -> dict:
    """What the gateway answers to x-ms-cosmos-is-query-plan-request for this query."""
    rewritten = ""
    if query.count:
        rewritten = f'SELECT VALUE [{{"item": COUNT(1)}}] FROM {query.alias}'
        if query.where_text:
            rewritten += f" {query.where_text}"
    return {
        "partitionedQueryExecutionInfoVersion": 2,
        "queryInfo": {
            "distinctType": "None",
            "top": None,
            "offset": None,
            "limit": None,
            "orderBy": [],
            "orderByExpressions": [],
            "groupByExpressions": [],
            "groupByAliases": [],
            "aggregates": ["Count"] if query.count else [],
            "groupByAliasToAggregateType": {},
            "rewrittenQuery": rewritten,
            "hasSelectValue": query.count,
            "dCountInfo": None,
            "hasNonStreamingOrderBy": False,
        },
        "queryRanges": [{"min": "", "max": "FF", "isMinInclusive": True, "isMaxInclusive": False}],
    }


def pinned_values(query: Query) -> dict[tuple[str, ...], Any]:
    """Property path -> literal of the `path = literal` terms ANDed at the top of the WHERE clause.

    The gateway routes a query whose filter pins every partition key path this way to that one key's
    range, as Cosmos does, without x-ms-documentdb-query-enablecrosspartition.
    """
    pinned: dict[tuple[str, ...], Any] = {}

    def walk(node) -> None:
        if node is None:
            return
        if node[0] == "and":
            walk(node[1])
            walk(node[2])
        elif node[0] == "cmp" and node[1] == "=":
            left, right = node[2], node[3]
            if left[0] == "lit":
                left, right = right, left
            if left[0] == "path" and right[0] == "lit" and all(isinstance(p, str) for p in left[1][1:]):
                pinned[tuple(left[1][1:])] = right[1]

    walk(query.where)
    return pinned
