"""Sample data for the sandbox and the benchmark, and the ways to load it.

`sample_documents(n)` yields realistic order documents (about 1 KB of JSON
each: nested objects, arrays, strings with non-ASCII text, ints, floats,
booleans, nulls, ISO timestamps), deterministic for a given seed so two runs
export the same bytes.

Loading: the gateway double's bulk path (`POST /_double/seed`, NDJSON; no
SDK round trip per document, so a million documents load in seconds) through
`GatewaySeeder`, or the SDK for `@vercel/cosmosdb-server` (`SdkSeeder`).
"""

from __future__ import annotations

import json
import random
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

PARTITION_KEY_PATH = "/customerId"

_CITIES = [
    ("Zürich", "CH"),
    ("München", "DE"),
    ("Lyon", "FR"),
    ("Kraków", "PL"),
    ("Dublin", "IE"),
    ("São Paulo", "BR"),
    ("Toronto", "CA"),
    ("Osaka", "JP"),
    ("Seattle", "US"),
    ("Malmö", "SE"),
]
_PRODUCTS = [
    "espresso beans 1kg",
    "oat milk",
    "ceramic mug",
    "grinder burr set",
    "filter papers x100",
    "travel tumbler",
    "descaler",
    "milk jug 600ml",
    "cold brew bottle",
    "tasting set",
]
_STATUSES = ["placed", "paid", "packed", "shipped", "delivered", "returned"]
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sample_document(i: int, rng: random.Random, *, revision: int = 0) -> dict[str, Any]:
    """One order: about 1 KB of JSON, nested and mixed-type."""
    city, country = _CITIES[rng.randrange(len(_CITIES))]
    placed = _EPOCH + timedelta(seconds=rng.randrange(0, 365 * 86400))
    items: list[dict[str, Any]] = []
    for line in range(rng.randint(2, 4)):
        qty = rng.randint(1, 5)
        price = round(rng.uniform(2.5, 89.0), 2)
        items.append(
            {
                "line": line + 1,
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "name": _PRODUCTS[rng.randrange(len(_PRODUCTS))],
                "quantity": qty,
                "unitPrice": price,
                "discount": None if rng.random() < 0.7 else round(rng.random() * 0.3, 3),
                "attributes": {"fragile": rng.random() < 0.2, "weightGrams": rng.randint(80, 2500)},
            }
        )
    total = round(sum(it["quantity"] * it["unitPrice"] for it in items), 2)
    return {
        "id": f"order-{i:08d}",
        "customerId": f"cust-{i % 5000:05d}",
        "type": "order",
        "revision": revision,
        "status": _STATUSES[(i + revision) % len(_STATUSES)],
        "placedAt": _iso(placed),
        "updatedAt": _iso(placed + timedelta(hours=revision)),
        "total": total,
        "currency": "EUR" if country in ("DE", "FR", "IE") else "USD",
        "paid": rng.random() < 0.9,
        "giftMessage": None if rng.random() < 0.8 else "Alles Gute zum Geburtstag! 🎉",
        "customer": {
            "name": f"Customer {i % 5000}",
            "email": f"c{i % 5000}@example.com",
            "loyalty": {"tier": rng.choice(["none", "silver", "gold"]), "points": rng.randint(0, 20000)},
        },
        "shipping": {
            "address": {
                "street": f"{rng.randint(1, 400)} Example Street",
                "city": city,
                "postalCode": f"{rng.randint(1000, 99999)}",
                "country": country,
            },
            "method": rng.choice(["standard", "express", "pickup"]),
            "trackingNumbers": [f"TRK{rng.randrange(10**10):010d}" for _ in range(rng.randint(0, 2))],
        },
        "items": items,
        "tags": rng.sample(["gift", "subscription", "wholesale", "promo", "first-order", "b2b"], rng.randint(0, 3)),
        "metrics": {
            "pageViews": rng.randint(1, 60),
            "sessionSeconds": round(rng.uniform(5, 1800), 1),
            "score": rng.random(),
        },
    }


def sample_documents(n: int, *, start: int = 0, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed * 1_000_003 + start)
    for i in range(start, start + n):
        yield sample_document(i, rng)


class SeedError(RuntimeError):
    pass


class GatewaySeeder:
    """Drives the gateway double's control endpoints (`/_double/...`) from another process."""

    def __init__(self, control_url: str, ca_bundle: str | Path):
        self.base = control_url.rstrip("/")
        self._ctx = ssl.create_default_context(cafile=str(ca_bundle))

    def _post(self, path: str, body: bytes, content_type: str = "application/json", timeout: float = 600) -> Any:
        request = urllib.request.Request(
            f"{self.base}/{path}", data=body, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, context=self._ctx, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise SeedError(f"POST {self.base}/{path} answered {exc.code}: {detail}") from None

    def create_container(
        self, db: str, container: str, *, partition_key_path: str = PARTITION_KEY_PATH, feed_ranges: int = 4
    ) -> dict:
        spec = {"db": db, "container": container, "partition_key_path": partition_key_path, "feed_ranges": feed_ranges}
        return self._post("containers", json.dumps(spec).encode())

    def set_latency(self, ms: float) -> dict:
        """The round-trip delay the double adds to every data-plane response (0: none)."""
        return self._post("latency", json.dumps({"ms": ms}).encode())

    def seed(self, db: str, container: str, docs: Iterable[dict], *, batch: int = 20_000) -> int:
        """Bulk-load in NDJSON batches (bounded memory on both sides); returns documents written."""
        total, lines = 0, []
        for doc in docs:
            lines.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
            if len(lines) >= batch:
                total += self._seed_batch(db, container, lines)
                lines = []
        if lines:
            total += self._seed_batch(db, container, lines)
        return total

    def _seed_batch(self, db: str, container: str, lines: list[str]) -> int:
        body = ("\n".join(lines) + "\n").encode("utf-8")
        query = urllib.parse.urlencode({"db": db, "container": container})
        return int(self._post(f"seed?{query}", body, "application/x-ndjson")["upserted"])

    def upsert(self, db: str, container: str, doc: dict) -> dict:
        query = urllib.parse.urlencode({"db": db, "container": container})
        return self._post(f"upsert?{query}", json.dumps(doc, ensure_ascii=False).encode("utf-8"))

    def delete(self, db: str, container: str, doc_id: str, partition_key: Any) -> bool:
        """Delete one document; False when it was not there (deleting twice is not an error)."""
        spec = {"db": db, "container": container, "id": doc_id, "partition_key": partition_key}
        try:
            self._post("delete", json.dumps(spec).encode())
        except SeedError as exc:
            if " answered 404:" in str(exc):
                return False
            raise
        return True


class SdkSeeder:
    """Seeds `@vercel/cosmosdb-server` through the SDK (it never checks auth; its certificate expired)."""

    def __init__(self, endpoint: str):
        from azure.cosmos import CosmosClient

        # cosmosdb-server accepts any key; this is not a secret of any real account.
        self._client = CosmosClient(endpoint, credential="c2FuZGJveA==", connection_verify=False)

    def _container(self, db: str, container: str):
        return self._client.get_database_client(db).get_container_client(container)

    def create_container(
        self, db: str, container: str, *, partition_key_path: str = PARTITION_KEY_PATH, feed_ranges: int = 1
    ) -> dict:
        from azure.cosmos import PartitionKey

        database = self._client.create_database_if_not_exists(db)
        database.create_container_if_not_exists(container, PartitionKey(path=partition_key_path))
        return {"ranges": ["0"]}

    def seed(self, db: str, container: str, docs: Iterable[dict], *, batch: int = 0) -> int:
        target, n = self._container(db, container), 0
        for doc in docs:
            target.upsert_item(doc)
            n += 1
        return n

    def upsert(self, db: str, container: str, doc: dict) -> dict:
        return self._container(db, container).upsert_item(doc)

    def delete(self, db: str, container: str, doc_id: str, partition_key: Any) -> bool:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            self._container(db, container).delete_item(doc_id, partition_key=partition_key)
        except CosmosResourceNotFoundError:
            return False
        return True
