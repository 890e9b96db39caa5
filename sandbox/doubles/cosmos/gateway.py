"""A project-owned Cosmos DB (NoSQL API) gateway double.

Speaks the REST protocol the unmodified azure-cosmos SDK uses (account read,
database/container read, the /pkranges change feed, the document change feed
with `A-IM: Incremental Feed`, point operations, queries with the query-plan
round trip), with several physical ranges owned by real V2 partition-key
hashing, splits (410/1002), AAD auth with data-plane RBAC and fault knobs.
Served over HTTPS by `serve_cosmos(state, ca)`.

Token audience: the SDK asks Entra for `<scheme>://<hostname>/.default` built
from the endpoint URL *without the port* (azure/cosmos/_base.py
create_scope_from_url), so against https://127.0.0.1:PORT the access token's
`aud` is "https://127.0.0.1". `CosmosGatewayState.audience_for(host)` derives
it the same way and passes it to `token_verifier(token, audience)`.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.doubles.cosmos import batch, management, rbac, sql
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.cosmos.store import (
    Container,
    Database,
    RangeGoneError,
    components_key,
    effective_partition_key,
    parse_pk_header,
    path_parts,
)
from sandbox.doubles.server import DoubleHandler, ServedDouble
from sandbox.doubles.tls import LocalCA

__all__ = ["CosmosGatewayState", "RoleAssignment", "CosmosError", "serve_cosmos", "effective_partition_key"]

CONSISTENCY_LEVELS = ("Eventual", "ConsistentPrefix", "Session", "BoundedStaleness", "Strong")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 10_000


#: Cosmos's answer (400) to an all-versions change feed read on an account that does not have it enabled.
ALL_VERSIONS_NOT_ENABLED = "Change Feed 'All Versions and Deletes' mode must be enabled."


class CosmosError(Exception):
    """An error response: HTTP status, Cosmos substatus and the service's code/message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        substatus: int = 0,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.substatus = status, code, message, substatus
        self.headers = headers or {}
        self.body = body


@dataclass
class _Timed:
    until: float
    value: Any = None

    def active(self) -> bool:
        return time.monotonic() < self.until


class CosmosGatewayState:
    """Accounts' databases, containers, documents, auth config, faults and stats."""

    def __init__(
        self,
        account_name: str,
        *,
        consistency: str = "Session",
        token_verifier: Callable[[str, str], dict] | None = None,
        role_assignments: Iterable[RoleAssignment] = (),
        rbac_propagation_seconds: float = 0.0,
        record_all_versions: bool = False,
        master_key: str | None = None,
    ):
        if consistency not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency {consistency!r} is not one of {', '.join(CONSISTENCY_LEVELS)}")
        self.account_name = account_name
        # The account key (base64), the only credential management operations accept when auth is on. None:
        # local (key) auth disabled, as on the project's accounts (disableLocalAuth); AAD tokens only.
        if master_key is not None:
            try:
                base64.b64decode(master_key, validate=True)
            except ValueError:
                raise ValueError("master_key must be base64 (the account key's format)") from None
        self.master_key = master_key
        self.consistency = consistency
        self.token_verifier = token_verifier
        self.role_assignments: list[RoleAssignment] = list(role_assignments)
        # A new assignment answers 403/5300 until it is this old (propagation delay).
        self.rbac_propagation_seconds = rbac_propagation_seconds
        # AllVersionsAndDeletes needs every version kept (continuous backup on a real account).
        self.record_all_versions = record_all_versions
        self.databases: dict[str, Database] = {}
        self._container_numbers = 0  # never reused: a re-created container gets a new rid
        # Seconds added to the wall clock: tests advance the account's time to make TTLs run out.
        self.clock_offset = 0.0
        self._database_numbers = 0
        self.lock = threading.RLock()
        self.stats: Counter[tuple[str, int]] = Counter()
        # (operation, x-ms-cosmos-priority-level or None) of every data-plane request: priority-based execution.
        self.priorities: Counter[tuple[str, str | None]] = Counter()
        # Seconds each request of an operation is held before it is answered, and how many were in flight at
        # most: lets a test see how many requests a client really runs at once.
        self.response_delay: dict[str, float] = {}
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        # When a list: (arrival time.monotonic(), operation, status, request charge, path) of every data-plane
        # request, for tests that check RU budgets and retry-after spacing. Off by default (bench sizes).
        self.request_log: list[tuple[float, str, int, float, str]] | None = None
        # Round-trip delay added to every data-plane response (`--latency-ms`): AWS to Azure is 5-30 ms.
        self.latency_seconds = 0.0
        self._faults: list[dict] = []  # countdown faults, in order
        self._not_modified: dict[tuple[str, str, str], _Timed] = {}
        self._not_propagated: _Timed | None = None

    # --- setup -----------------------------------------------------------
    def create_container(
        self,
        db: str,
        container: str,
        partition_key_path: str | list[str] = "/pk",
        feed_ranges: int = 4,
        *,
        kind: str | None = None,
        version: int = 2,
    ) -> Container:
        """A container (and its database if new); a list of paths is a hierarchical (MultiHash) key."""
        with self.lock:
            database = self.databases.get(db)
            if database is None:
                database = self.add_database(db)
            if container in database.containers:
                raise ValueError(f"container {db}/{container} already exists")
            created = database.containers[container] = Container(
                database,
                container,
                partition_key_path,
                feed_ranges,
                number=self._next_container_number(),
                kind=kind,
                version=version,
            )
            created.clock = self.now
            return created

    def _next_container_number(self) -> int:
        self._container_numbers += 1
        return self._container_numbers

    def add_database(self, db: str) -> Database:
        with self.lock:
            if db in self.databases:
                raise ValueError(f"database {db} already exists")
            self._database_numbers += 1
            database = self.databases[db] = Database(db, self._database_numbers)
            return database

    def container(self, db: str, container: str) -> Container:
        try:
            return self.databases[db].containers[container]
        except KeyError:
            raise KeyError(f"container {db}/{container} does not exist: call create_container first") from None

    def now(self) -> float:
        """The account's clock (wall clock plus `advance_clock`): documents' _ts and TTL expiry use it."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> dict[str, list[str]]:
        """Move the account's clock forward and expire what TTL says is gone; {"db/container": [ids]}."""
        if seconds < 0:
            raise ValueError(f"seconds={seconds} must not be negative: the clock only moves forward")
        with self.lock:
            self.clock_offset += seconds
            return self.expire_all()

    def expire_all(self) -> dict[str, list[str]]:
        expired = {}
        with self.lock:
            for database in self.databases.values():
                for container in database.containers.values():
                    ids = container.expire(record_versions=self.record_all_versions)
                    if ids:
                        expired[f"{database.id}/{container.id}"] = ids
        return expired

    def add_role_assignment(self, assignment: RoleAssignment) -> None:
        with self.lock:
            self.role_assignments.append(assignment)

    # --- data ------------------------------------------------------------
    def upsert_many(self, db: str, container: str, docs: Iterable[dict]) -> int:
        """Fast in-process bulk load (no HTTP); returns the number of documents written."""
        return self.container(db, container).bulk_load(docs, record_versions=self.record_all_versions)

    def upsert(self, db: str, container: str, doc: dict) -> dict:
        entry = self.container(db, container).upsert(doc, record_versions=self.record_all_versions)
        return json.loads(entry.body)

    def delete(self, db: str, container: str, id: str, partition_key: Any) -> bool:
        return self.container(db, container).delete(id, partition_key, record_versions=self.record_all_versions)

    def split(self, db: str, container: str, range_id: str | None = None) -> list[str]:
        """Split a range (default: the fullest); returns the new range ids."""
        return [r.id for r in self.container(db, container).split(range_id)]

    # --- faults ------------------------------------------------------------
    def throttle_next(self, n: int, *, retry_after_ms: int = 10, operation: str | None = None) -> None:
        """The next n matching requests get 429/3200 with x-ms-retry-after-ms."""
        self._add_fault("throttle", n, operation, retry_after_ms=retry_after_ms)

    def unavailable_next(self, n: int, *, operation: str | None = None) -> None:
        """The next n matching requests get 503."""
        self._add_fault("unavailable", n, operation)

    def reset_next(self, n: int, *, operation: str | None = None) -> None:
        """The next n matching responses are cut off mid-body and the connection is reset."""
        self._add_fault("reset", n, operation)

    def not_modified_for(self, db: str, container: str, range_id: str, seconds: float) -> None:
        """For `seconds`, that range's change feed shows nothing written after this call (a lagging range).

        Readers whose continuation is at the range's LSN of now get 304 with their own etag back, however
        much is written meanwhile; documents already there stay visible (a from-Beginning read returns them).
        """
        with self.lock:
            head = self.container(db, container).range_by_id(range_id).lsn
            self._not_modified[(db, container, range_id)] = _Timed(time.monotonic() + seconds, head)

    def not_propagated_for(self, seconds: float) -> None:
        """Every authenticated request gets 403/5300 (assignment not propagated yet) for `seconds`."""
        self._not_propagated = _Timed(time.monotonic() + seconds)

    def _add_fault(self, kind: str, n: int, operation: str | None, **extra: Any) -> None:
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"operation {operation!r} is not one of {', '.join(sorted(OPERATIONS))}")
        with self.lock:
            self._faults.append({"kind": kind, "remaining": n, "operation": operation, **extra})

    def _take_fault(self, operation: str) -> dict | None:
        with self.lock:
            for fault in self._faults:
                if fault["operation"] in (None, operation):
                    fault["remaining"] -= 1
                    if fault["remaining"] == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._not_modified.clear()
            self._not_propagated = None

    def count(self, operation: str, status: int) -> None:
        with self.lock:
            self.stats[(operation, status)] += 1

    def priority_levels(self, operation: str) -> Counter:
        """How many `operation` requests came with each x-ms-cosmos-priority-level (None: header absent)."""
        with self.lock:
            return Counter({level: n for (op, level), n in self.priorities.items() if op == operation})

    def stats_dict(self) -> dict[str, dict[str, int]]:
        with self.lock:
            out: dict[str, dict[str, int]] = {}
            for (operation, status), n in sorted(self.stats.items()):
                out.setdefault(operation, {})[str(status)] = n
            return out

    # --- auth ----------------------------------------------------------------
    @staticmethod
    def audience_for(host_header: str) -> str:
        """Audience the SDK requests for an endpoint on this Host (scheme://hostname, no port)."""
        hostname = urlsplit(f"//{host_header}").hostname or host_header
        return f"https://{hostname}"

    def authorize(
        self,
        authorization: str | None,
        host: str,
        action: str,
        scope: str,
        *,
        management: str | None = None,
        signed: tuple[str, list[tuple[str, str]], str] | None = None,
    ) -> None:
        """Authenticate and authorize one request (CosmosError when refused).

        management: "POST /dbs"-like text of a management operation (account key only, never AAD).
        signed: (verb, [(resource type, resource link) the SDK may have signed], x-ms-date) for a
        master-key signature, checked as the service checks it (HMAC-SHA256 with the account key).
        """
        if self.token_verifier is None and self.master_key is None:
            return
        if not authorization:
            raise CosmosError(
                401,
                "Unauthorized",
                "Required Header authorization is missing. Ensure a valid Authorization token is passed.",
            )
        # Split by hand: parse_qs would turn a base64 signature's "+" into a space.
        fields: dict[str, list[str]] = {}
        for pair in unquote(authorization).split("&"):
            name, _, value = pair.partition("=")
            fields.setdefault(name, []).append(value)
        if fields.get("type") == ["master"] and self.master_key is not None:
            self._check_master_signature(fields, signed)
            return
        if self.token_verifier is None:
            raise CosmosError(
                401,
                "Unauthorized",
                "The input authorization token can't serve the request: only the account key is accepted.",
            )
        if fields.get("type") != ["aad"] or not fields.get("sig") or not fields["sig"][0]:
            raise CosmosError(
                401,
                "Unauthorized",
                "The input authorization token can't serve the request. "
                "Only AAD tokens (type=aad&ver=1.0&sig=<jwt>) are accepted: local "
                "authorization is disabled on this account.",
            )
        audience = self.audience_for(host)
        try:
            claims = self.token_verifier(fields["sig"][0], audience)
        except Exception as exc:  # the verifier's reason, never the token
            raise CosmosError(
                401,
                "Unauthorized",
                f"The input authorization token can't serve the request. "
                f"The AAD token was rejected for audience {audience}: {exc}",
            ) from None
        principal = claims.get("oid")
        if not principal:
            raise CosmosError(401, "Unauthorized", "The AAD token has no oid claim: it does not identify a principal.")
        if management is not None:
            # Real Cosmos, whatever roles the principal holds: management goes through ARM or the account key.
            raise CosmosError(
                403,
                "Forbidden",
                f"Request blocked by Auth {self.account_name} : The given request [{management}] cannot be "
                "authorized by AAD token in data plane. Learn more: https://aka.ms/cosmos-native-rbac.",
                substatus=5300,
            )
        if self._not_propagated is not None and self._not_propagated.active():
            raise CosmosError(403, "Forbidden", self._not_propagated_message(principal), substatus=5300)
        # The account read (scope "/") only needs readMetadata somewhere: a container-scoped
        # assignment is enough for the SDK to start, as on a real account.
        matching = [
            a
            for a in self.role_assignments
            if a.principal_id == principal and (scope == "/" or a.covers_scope(scope)) and a.allows(action)
        ]
        if not matching:
            raise CosmosError(
                403, "Forbidden", rbac.forbidden_message(self.account_name, principal, action, scope), substatus=5301
            )
        now = time.monotonic()
        if all(now - a.created_at < self.rbac_propagation_seconds for a in matching):
            raise CosmosError(403, "Forbidden", self._not_propagated_message(principal), substatus=5300)

    def _check_master_signature(self, fields: dict, signed: tuple[str, list[tuple[str, str]], str] | None) -> None:
        assert self.master_key is not None
        sig = (fields.get("sig") or [""])[0]
        if signed is not None:
            verb, candidates, date = signed
            key = base64.b64decode(self.master_key)
            for resource_type, link in candidates:
                text = f"{verb.lower()}\n{resource_type.lower()}\n{link}\n{date.lower()}\n\n"
                expected = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
                if hmac.compare_digest(expected, sig):
                    return
        raise CosmosError(
            401,
            "Unauthorized",
            "The input authorization token can't serve the request. The wrong key is being used or the expected "
            "payload is not built as per the protocol. For more info: https://aka.ms/cosmosdb-tsg-mac-token.",
        )

    def _not_propagated_message(self, principal: str) -> str:
        return (
            f"Request blocked by Auth {self.account_name} : The role assignments of principal [{principal}] "
            "are not yet propagated to this account. Retry after a few minutes. "
            "Learn more: https://aka.ms/cosmos-native-rbac."
        )


OPERATIONS = {
    "account.read",
    "database.read",
    "container.read",
    "pkranges.read",
    "changefeed.read",
    "query",
    "queryplan",
    "item.read",
    "item.create",
    "item.upsert",
    "item.replace",
    "item.delete",
    "item.patch",
    "conflicts.read",
    "item.batch",
    "items.readfeed",
    # management (account key only)
    "databases.list",
    "database.create",
    "database.delete",
    "containers.list",
    "container.create",
    "container.replace",
    "container.delete",
    "offers.query",
    "offer.read",
    "offer.replace",
}

_ACTIONS = {
    "account.read": rbac.READ_METADATA,
    "database.read": rbac.READ_METADATA,
    "container.read": rbac.READ_METADATA,
    "pkranges.read": rbac.READ_METADATA,
    "changefeed.read": rbac.READ_CHANGE_FEED,
    "query": rbac.EXECUTE_QUERY,
    "queryplan": rbac.EXECUTE_QUERY,
    "items.readfeed": rbac.EXECUTE_QUERY,
    "item.read": rbac.ITEM_READ,
    "item.create": rbac.ITEM_CREATE,
    "item.upsert": rbac.ITEM_UPSERT,
    "item.replace": rbac.ITEM_REPLACE,
    "item.delete": rbac.ITEM_DELETE,
}


CROSS_PARTITION_DISABLED = (
    "Cross partition query is required but disabled. Please set x-ms-documentdb-query-enablecrosspartition "
    "to true, specify x-ms-documentdb-partitionkey, or revise your query to avoid this exception."
)
#: The pseudo-action of management operations: no data action grants it, only the account key.
MANAGEMENT = "management"


def _signing_candidates(parts: list[str]) -> list[tuple[str, str]]:
    """(resource type, resource link) pairs the SDK may have signed for this path (name- or rid-based)."""
    if not parts:
        return [("databaseaccount", ""), ("", "")]
    resource_type, link = (parts[-1], parts[:-1]) if len(parts) % 2 else (parts[-2], parts)
    return [(resource_type, "/".join(link)), (resource_type, link[-1].lower() if link else "")]


def _write_charge(body: bytes) -> str:
    """Request units of an item write, shaped like the service's: about 5.7 RU per started KB."""
    return f"{5.71 * max(1, -(-len(body) // 1024)):.2f}"


# --- Request charges of reads (x-ms-request-charge) -------------------------------------------------------
# The rule: 1 RU per started KB of the documents a page returns, plus 2.3 RU per query page. Source:
# Microsoft Learn, "Optimize request cost in Azure Cosmos DB" (a point read costs 1 RU for 1 KB; a query's
# RUs depend on the items it loads and returns, and its pages' charges add up to the whole query's) and
# "Request units in Azure Cosmos DB" (a 1 KB read = 1 RU); a simple query page costs ~2.3 RU (the
# portal's figure for a small query). The change feed reads items like a query reads them, without the
# query's compilation. Real charges differ in detail (indexing, consistency: Strong/Bounded double reads);
# what matters for the budget is that they grow with the bytes returned, as the service's do.
QUERY_PAGE_RU = 2.3
READ_RU_PER_KB = 1.0


def _read_charge(documents_bytes: int) -> str:
    """RUs of a change-feed page returning `documents_bytes` of documents (at least 1 RU)."""
    return f"{READ_RU_PER_KB * max(1, -(-documents_bytes // 1024)):.2f}"


def _query_charge(documents_bytes: int) -> str:
    """RUs of a query page returning `documents_bytes` of documents."""
    return f"{QUERY_PAGE_RU + READ_RU_PER_KB * -(-documents_bytes // 1024):.2f}"


def _http_date(ts: float | None = None) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _etag_lsn(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value.strip('"'))
    except ValueError:
        raise CosmosError(400, "BadRequest", f"{what} {value!r} is not an LSN etag issued by this account") from None


class CosmosGatewayHandler(DoubleHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real gateway
    # Headers and body go out as two writes: with Nagle on, the body waits for the client's delayed ACK
    # (~20-40 ms per response; measured 65 ms per point write, 2 ms without).
    disable_nagle_algorithm = True
    server_version = "CosmosGatewayDouble/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet; the tests read stats instead
        pass

    @property
    def state(self) -> CosmosGatewayState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # --- plumbing ------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes | None, headers: dict[str, str], *, reset: bool = False) -> None:
        self.send_response(status)
        base = {
            "x-ms-activity-id": self.headers.get("x-ms-activity-id") or str(uuid.uuid4()),
            "x-ms-request-charge": headers.pop("x-ms-request-charge", "1.0"),
            "x-ms-gatewayversion": "version=2.14.0",
            "Date": _http_date(),
        }
        if body is not None:
            base["Content-Type"] = "application/json"
        base["Content-Length"] = str(len(body or b""))
        for name, value in {**base, **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if reset:
            # Half a body, then an RST: the client sees the connection die mid-response.
            self.wfile.write((body or b"{}")[: max(1, len(body or b"") // 2)])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.close()
            return
        if body:
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload, separators=(",", ":")).encode(), headers or {})

    def _dispatch(self, method: str) -> None:
        body = self._body()
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        if parts[:1] == ["_double"]:
            from sandbox.doubles.cosmos.control import handle_control

            status, payload = handle_control(self.state, method, parts[1:], parse_qs(url.query), body)
            self._send_json(status, payload)
            return
        operation = "unknown"
        arrived = time.monotonic()
        self.signed = (method, _signing_candidates(parts), self.headers.get("x-ms-date") or "")
        try:
            operation, action, scope, handler = self._route(method, parts)
            with self.state.lock:
                self.state.priorities[(operation, self.headers.get("x-ms-cosmos-priority-level"))] += 1
            self.state.authorize(
                self.headers.get("authorization"),
                self.headers.get("Host", "127.0.0.1"),
                action,
                scope,
                management=f"{method} /{'/'.join(parts)}" if action == MANAGEMENT else None,
                signed=self.signed,
            )
            fault = self.state._take_fault(operation)
            if fault is not None and fault["kind"] == "throttle":
                raise CosmosError(
                    429,
                    "TooManyRequests",
                    "Request rate is large. More Request Units may be needed, "
                    "so no changes were made. Please retry this request later.",
                    substatus=3200,
                    headers={"x-ms-retry-after-ms": str(fault["retry_after_ms"]), "x-ms-request-charge": "0"},
                )
            if fault is not None and fault["kind"] == "unavailable":
                raise CosmosError(503, "ServiceUnavailable", "Service is currently unavailable. Please retry.")
            status, payload, headers = self._serve(operation, handler, body)
            if fault is not None and fault["kind"] == "reset":
                self.state.count(operation, 0)
                self._send(status, payload, headers, reset=True)
                return
        except CosmosError as err:
            self.state.count(operation, err.status)
            headers = {"x-ms-substatus": str(err.substatus), **err.headers}
            self._log_request(arrived, operation, err.status, headers.get("x-ms-request-charge", "1.0"))
            payload_obj = err.body or {"code": err.code, "message": err.message}
            self._round_trip(arrived)
            self._send(err.status, json.dumps(payload_obj).encode(), headers)
            return
        self.state.count(operation, status)
        self._log_request(arrived, operation, status, headers.get("x-ms-request-charge", "1.0"))
        self._round_trip(arrived)
        self._send(status, payload, headers)

    def _round_trip(self, arrived: float) -> None:
        """Hold the response until `latency_seconds` after the request arrived (a cross-cloud round trip).

        Counted from arrival, so serving time overlaps it as on a real network; it holds this connection's
        thread only, so concurrent requests overlap their round trips as they would on the wire.
        """
        remaining = self.state.latency_seconds - (time.monotonic() - arrived)
        if remaining > 0:
            time.sleep(remaining)

    def _log_request(self, arrived: float, operation: str, status: int, charge: str) -> None:
        log = self.state.request_log
        if log is not None:
            with self.state.lock:
                log.append((arrived, operation, status, float(charge), urlsplit(self.path).path))

    def _serve(self, operation: str, handler: Callable[[bytes], Any], body: bytes):
        state = self.state
        with state.lock:
            state.in_flight[operation] += 1
            state.max_in_flight[operation] = max(state.max_in_flight[operation], state.in_flight[operation])
        try:
            delay = state.response_delay.get(operation, 0.0)
            if delay:
                time.sleep(delay)
            return handler(body)
        finally:
            with state.lock:
                state.in_flight[operation] -= 1

    # --- routing ---------------------------------------------------------------
    def _route(self, method: str, parts: list[str]):
        h = self.headers
        n = len(parts)
        if n == 0 and method == "GET":
            return "account.read", rbac.READ_METADATA, "/", lambda _b: self._account()
        if parts[:1] == ["offers"] and n <= 2:
            if n == 1 and method in ("GET", "POST"):
                return "offers.query", MANAGEMENT, "/", lambda b: management.query_offers(self, b)
            if n == 2 and method == "GET":
                return "offer.read", MANAGEMENT, "/", lambda _b: management.read_offer(self, parts[1])
            if n == 2 and method == "PUT":
                return "offer.replace", MANAGEMENT, "/", lambda b: management.replace_offer(self, parts[1], b)
        if parts[:1] == ["dbs"] and n == 1:
            if method == "GET" or (method == "POST" and (h.get("x-ms-documentdb-isquery") or "").lower() == "true"):
                return "databases.list", MANAGEMENT, "/", lambda _b: management.list_databases(self)
            if method == "POST":
                return "database.create", MANAGEMENT, "/", lambda b: management.create_database(self, b)
        if n < 2 or parts[0] != "dbs":
            raise CosmosError(404, "NotFound", f"Resource path /{'/'.join(parts)} is not served by this double.")
        db = parts[1]
        database = self.state.databases.get(db)
        # A link built from resource ids (`_self`: dbs/<rid>/colls/<rid>/docs/<rid>/) instead of names.
        by_rid = database is None
        if by_rid:
            database = next((d for d in self.state.databases.values() if d.rid == db), None)
        if database is None:
            raise CosmosError(404, "NotFound", f"Database {db} does not exist.")
        db_scope = f"/dbs/{database.id}"
        if n == 2 and method == "GET":
            return "database.read", rbac.READ_METADATA, db_scope, lambda _b: self._database(database)
        if n == 2 and method == "DELETE":
            return "database.delete", MANAGEMENT, db_scope, lambda _b: management.delete_database(self, database)
        if n == 3 and parts[2] == "colls":
            if method == "GET" or (method == "POST" and (h.get("x-ms-documentdb-isquery") or "").lower() == "true"):
                return "containers.list", MANAGEMENT, db_scope, lambda _b: management.list_containers(self, database)
            if method == "POST":
                return (
                    "container.create",
                    MANAGEMENT,
                    db_scope,
                    lambda b: management.create_container(self, database, b),
                )
        if n < 4 or parts[2] != "colls":
            raise CosmosError(404, "NotFound", f"Resource path /{'/'.join(parts)} is not served by this double.")
        container = database.container_named(parts[3], by_rid=by_rid)
        if container is None:
            raise CosmosError(404, "NotFound", f"Container {database.id}/{parts[3]} does not exist.")
        scope = f"/dbs/{database.id}/colls/{container.id}"
        # Expired documents are gone before any read sees them (the service hides them at once).
        container.expire(record_versions=self.state.record_all_versions)
        if n == 4 and method == "GET":
            return "container.read", rbac.READ_METADATA, scope, lambda _b: self._container(container)
        if n == 4 and method == "PUT":
            return "container.replace", MANAGEMENT, scope, lambda b: management.replace_container(self, container, b)
        if n == 4 and method == "DELETE":
            return "container.delete", MANAGEMENT, scope, lambda _b: management.delete_container(self, container)
        if n == 6 and parts[4] == "docs" and by_rid:
            doc_id = container.id_for_rid(parts[5])
            if doc_id is None:
                raise CosmosError(404, "NotFound", "Entity with the specified id does not exist in the system.")
            parts = [*parts[:5], doc_id]
        if n == 5 and parts[4] == "conflicts" and method in ("GET", "POST"):
            # Conflicts exist only with multi-region writes, which the double does not model: always none.
            return "conflicts.read", rbac.READ_METADATA, scope, lambda _b: self._no_conflicts(container)
        if n == 6 and parts[4] == "conflicts" and method in ("GET", "DELETE"):
            return "conflicts.read", rbac.READ_METADATA, scope, lambda _b: self._no_conflicts(container, parts[5])
        if n == 5 and parts[4] == "pkranges" and method == "GET":
            return "pkranges.read", rbac.READ_METADATA, scope, lambda _b: self._pkranges(container)
        if n == 5 and parts[4] == "docs":
            if method == "GET" and h.get("A-IM"):
                return "changefeed.read", rbac.READ_CHANGE_FEED, scope, lambda _b: self._change_feed(container)
            if method == "POST" and (h.get("x-ms-cosmos-is-batch-request") or "").lower() == "true":
                # Each operation's own data action is checked in batch.execute.
                return "item.batch", rbac.READ_METADATA, scope, lambda b: batch.execute(self, container, b)
            if method == "POST" and (h.get("x-ms-cosmos-is-query-plan-request") or "").lower() == "true":
                return "queryplan", rbac.EXECUTE_QUERY, scope, lambda b: self._query_plan(container, b)
            if method == "POST" and (h.get("x-ms-documentdb-isquery") or "").lower() == "true":
                return "query", rbac.EXECUTE_QUERY, scope, lambda b: self._query(container, b)
            if method == "POST" and (h.get("Content-Type") or "").startswith("application/query+json"):
                return "query", rbac.EXECUTE_QUERY, scope, lambda b: self._query(container, b)
            if method == "POST":
                upsert = (h.get("x-ms-documentdb-is-upsert") or "").lower() == "true"
                op, action = ("item.upsert", rbac.ITEM_UPSERT) if upsert else ("item.create", rbac.ITEM_CREATE)
                return op, action, scope, lambda b: self._write(container, b, upsert=upsert)
            if method == "GET":
                return "items.readfeed", rbac.EXECUTE_QUERY, scope, lambda b: self._query(container, b, read_feed=True)
        if n == 6 and parts[4] == "docs":
            doc_id = parts[5]
            if method == "GET":
                return "item.read", rbac.ITEM_READ, scope, lambda _b: self._read(container, doc_id)
            if method == "PUT":
                return "item.replace", rbac.ITEM_REPLACE, scope, lambda b: self._write(container, b, replace_id=doc_id)
            if method == "DELETE":
                return "item.delete", rbac.ITEM_DELETE, scope, lambda _b: self._delete(container, doc_id)
            if method == "PATCH":
                return "item.patch", rbac.ITEM_REPLACE, scope, lambda b: self._patch(container, doc_id, b)
        raise CosmosError(405, "MethodNotAllowed", f"{method} /{'/'.join(parts)} is not served by this double.")

    # --- metadata ----------------------------------------------------------------
    def _account(self):
        host = self.headers.get("Host", "127.0.0.1")
        endpoint = f"https://{host}/"
        location = [{"name": "Local", "databaseAccountEndpoint": endpoint}]
        payload = {
            "_self": "",
            "id": self.state.account_name,
            "_rid": f"{self.state.account_name}.documents.azure.com",
            "media": "//media/",
            "addresses": "//addresses/",
            "_dbs": "//dbs/",
            "writableLocations": location,
            "readableLocations": location,
            "enableMultipleWriteLocations": False,
            "continuousBackupEnabled": self.state.record_all_versions,
            "enableNRegionSynchronousCommit": False,
            "userReplicationPolicy": {"asyncReplication": False, "minReplicaSetSize": 3, "maxReplicasetSize": 4},
            "userConsistencyPolicy": {"defaultConsistencyLevel": self.state.consistency},
            "systemReplicationPolicy": {"minReplicaSetSize": 3, "maxReplicasetSize": 4},
            "readPolicy": {"primaryReadCoefficient": 1, "secondaryReadCoefficient": 1},
            "queryEngineConfiguration": json.dumps(
                {
                    "maxSqlQueryInputLength": 262144,
                    "maxJoinsPerSqlQuery": 5,
                    "maxLogicalAndPerSqlQuery": 500,
                    "maxLogicalOrPerSqlQuery": 500,
                    "maxUdfRefPerSqlQuery": 10,
                    "maxInExpressionItemsCount": 16000,
                    "queryMaxInMemorySortDocumentCount": 500,
                    "maxQueryRequestTimeoutFraction": 0.9,
                    "sqlAllowNonFiniteNumbers": False,
                    "sqlAllowAggregateFunctions": True,
                    "sqlAllowSubQuery": True,
                    "sqlAllowScalarSubQuery": True,
                    "allowNewKeywords": True,
                    "sqlAllowLike": True,
                    "sqlAllowGroupByClause": True,
                    "maxSpatialQueryCells": 12,
                    "spatialMaxGeometryPointCount": 256,
                    "sqlDisableOptimizationFlags": 0,
                    "sqlAllowTop": True,
                    "enableSpatialIndexing": True,
                }
            ),
        }
        return 200, json.dumps(payload).encode(), {}

    def _database(self, database: Database):
        return 200, json.dumps(management.database_resource(database)).encode(), {}

    def _container(self, container: Container):
        payload = {
            "id": container.id,
            "indexingPolicy": {
                "indexingMode": "consistent",
                "automatic": True,
                "includedPaths": [{"path": "/*"}],
                "excludedPaths": [{"path": '/"_etag"/?'}],
            },
            "partitionKey": container.partition_key_definition,
            "conflictResolutionPolicy": {
                "mode": "LastWriterWins",
                "conflictResolutionPath": "/_ts",
                "conflictResolutionProcedure": "",
            },
            "geospatialConfig": {"type": "Geography"},
            "_rid": container.rid,
            "_ts": container.created_ts,
            "_self": f"dbs/{container.database.rid}/colls/{container.rid}/",
            "_etag": f'"{container.rid}"',
            "_docs": "docs/",
            "_sprocs": "sprocs/",
            "_triggers": "triggers/",
            "_udfs": "udfs/",
            "_conflicts": "conflicts/",
            **container.properties,
        }
        headers = {"x-ms-alt-content-path": f"dbs/{container.database.id}"}
        if (self.headers.get("x-ms-documentdb-populatequotainfo") or "").lower() == "true":
            # Usage as the service reports it (sizes in KB); clients estimate progress from documentsCount.
            count = container.document_count()
            headers["x-ms-resource-usage"] = (
                f"documentSize=0;documentsSize={count};documentsCount={count};collectionSize={count}"
            )
        return 200, json.dumps(payload).encode(), headers

    def _no_conflicts(self, container: Container, conflict_id: str | None = None):
        if conflict_id is not None:
            raise CosmosError(404, "NotFound", f"Conflict {conflict_id} does not exist.")
        if (
            self.command == "POST"
            and self.headers.get("x-ms-documentdb-partitionkey") is None
            and (self.headers.get("x-ms-documentdb-query-enablecrosspartition") or "").lower() != "true"
        ):
            raise CosmosError(400, "BadRequest", CROSS_PARTITION_DISABLED)
        payload = {"_rid": container.rid, "Conflicts": [], "_count": 0}
        return 200, json.dumps(payload).encode(), {"x-ms-item-count": "0"}

    def _pkranges(self, container: Container):
        """The routing map, itself read as a change feed (If-None-Match = last etag; 304 when unchanged)."""
        since = _etag_lsn(self.headers.get("If-None-Match"), "If-None-Match")
        with container.lock:
            etag = f'"{container.range_etag}"'
            if since is not None and since >= container.range_etag:
                return 304, None, {"etag": etag}
            ranges = container.ranges_changed_since(since)
        payload = {
            "_rid": container.rid,
            "PartitionKeyRanges": [r.as_resource(container.rid) for r in ranges],
            "_count": len(ranges),
        }
        return 200, json.dumps(payload).encode(), {"etag": etag, "x-ms-item-count": str(len(ranges))}

    # --- change feed -------------------------------------------------------------
    def _page_size(self) -> int:
        raw = self.headers.get("x-ms-max-item-count")
        if raw is None or raw.strip() in ("", "-1"):
            return DEFAULT_PAGE_SIZE
        try:
            value = int(raw)
        except ValueError:
            raise CosmosError(400, "BadRequest", f"x-ms-max-item-count {raw!r} is not an integer") from None
        if value < 1:
            raise CosmosError(400, "BadRequest", f"x-ms-max-item-count {value} must be positive or -1")
        return min(value, MAX_PAGE_SIZE)

    def _target_range(self, container: Container):
        """The physical range a feed/query request addresses, plus its optional EPK sub-range filter."""
        range_id = self.headers.get("x-ms-documentdb-partitionkeyrangeid")
        if range_id is None:
            return None, None
        range_id = range_id.split(",")[-1]
        try:
            rng = container.range_by_id(range_id)
        except RangeGoneError:
            raise CosmosError(
                410,
                "Gone",
                f"The target partition key range {range_id} is gone (split). Refresh the routing map.",
                substatus=1002,
            ) from None
        except KeyError:
            raise CosmosError(
                400,
                "BadRequest",
                f"x-ms-documentdb-partitionkeyrangeid {range_id!r} "
                f"does not exist in {container.database.id}/{container.id}",
            ) from None
        epk_filter = None
        if (self.headers.get("x-ms-read-key-type") or "") == "EffectivePartitionKeyRange":
            # No start/end headers = the whole physical range (the SDK omits them then).
            lo = self.headers.get("x-ms-start-epk", rng.min)
            hi = self.headers.get("x-ms-end-epk", rng.max)
            if lo < rng.min or (rng.max != "FF" and (hi > rng.max or hi == "FF")):
                # EPK range no longer inside one physical range: the range split under the caller.
                raise CosmosError(
                    410, "Gone", f"EPK range [{lo}, {hi}) spans more than range {rng.id}.", substatus=1002
                )
            epk_filter = (lo, hi)
        return rng, epk_filter

    def _change_feed(self, container: Container):
        h = self.headers
        a_im = h.get("A-IM") or ""
        full_fidelity = a_im.lower() == "full-fidelity feed"
        if not full_fidelity and a_im.lower() != "incremental feed":
            raise CosmosError(400, "BadRequest", f"A-IM {a_im!r} must be 'Incremental Feed' or 'Full-Fidelity Feed'")
        if full_fidelity and not self.state.record_all_versions:
            # Refused on every read, "now" (If-None-Match: *) included, as Cosmos answers an account without
            # continuous backup and the all-versions opt-in (record_all_versions=True stands for both).
            raise CosmosError(400, "BadRequest", ALL_VERSIONS_NOT_ENABLED)
        with container.lock:
            rng, epk_filter = self._target_range(container)
            if rng is None:
                if len(container.ranges) != 1:
                    raise CosmosError(
                        400,
                        "BadRequest",
                        "A change feed request on a container with several "
                        "partition key ranges must name one (x-ms-documentdb-partitionkeyrangeid).",
                    )
                rng = container.ranges[0]
            if_none_match = h.get("If-None-Match")
            frozen = self.state._not_modified.get((container.database.id, container.id, rng.id))
            # A frozen (lagging) range shows nothing written after its freeze: its head is the LSN of then.
            head = frozen.value if frozen is not None and frozen.active() else rng.lsn
            current = f'"{head}"'
            session = {
                "x-ms-session-token": f"{rng.id}:-1#{head}",
                "lsn": str(head),
                "x-ms-documentdb-partitionkeyrangeid": rng.id,
            }
            if if_none_match == "*":
                return 304, None, {"etag": current, **session}
            since = _etag_lsn(if_none_match, "If-None-Match") or 0
            if since >= head:
                return 304, None, {"etag": f'"{since}"' if if_none_match else current, **session}
            modified_since = h.get("If-Modified-Since")
            min_ts = int(email.utils.parsedate_to_datetime(modified_since).timestamp()) if modified_since else None
            limit = self._page_size()
            if full_fidelity:
                return self._full_fidelity(container, rng, since, head, epk_filter, limit, session)
            picked = []
            for entry in rng.entries_after(since):
                if entry.lsn > head:
                    break
                if epk_filter and not (
                    epk_filter[0] <= entry.epk and (epk_filter[1] == "FF" or entry.epk < epk_filter[1])
                ):
                    continue
                if min_ts is not None and entry.ts < min_ts:
                    continue
                picked.append(entry)
                if len(picked) == limit:
                    break
        if not picked:
            # Nothing new: 304 and an etag at the range's current LSN (a later read starts from here).
            return 304, None, {"etag": current, **session}
        documents = b",".join(e.body[:-1] + b',"_lsn":%d}' % e.lsn for e in picked)
        payload = b'{"_rid":"%s","Documents":[%s],"_count":%d}' % (container.rid.encode(), documents, len(picked))
        return (
            200,
            payload,
            {
                "etag": f'"{picked[-1].lsn}"',
                "x-ms-item-count": str(len(picked)),
                "x-ms-request-charge": _read_charge(len(documents)),
                **session,
            },
        )

    def _full_fidelity(self, container: Container, rng, since: int, head: int, epk_filter, limit: int, session: dict):
        if not self.state.record_all_versions:
            raise CosmosError(400, "BadRequest", ALL_VERSIONS_NOT_ENABLED)
        if not self.headers.get("If-None-Match"):
            raise CosmosError(
                400,
                "BadRequest",
                "AllVersionsAndDeletes can only start from now or a continuation, not from the beginning.",
            )
        picked = []
        for version in rng.versions:
            if version.lsn <= since:
                continue
            if version.lsn > head:
                break
            if epk_filter and not (
                epk_filter[0] <= version.epk and (epk_filter[1] == "FF" or version.epk < epk_filter[1])
            ):
                continue
            picked.append(version)
            if len(picked) == limit:
                break
        if not picked:
            return 304, None, {"etag": f'"{head}"', **session}
        documents = []
        for v in picked:
            metadata = {"lsn": v.lsn, "crts": v.ts, "operationType": v.operation}
            if v.previous_lsn is not None:
                metadata["previousImageLSN"] = v.previous_lsn
            if v.ttl_expired:
                metadata["timeToLiveExpired"] = True
            if v.body is None:
                metadata["id"] = v.id
                # Wire format: {"<partition key property>": value}; nothing for a document without one.
                components = json.loads(v.pk)
                metadata["partitionKey"] = {
                    path.lstrip("/"): value
                    for path, value in zip(container.partition_key_paths, components)
                    if value != {}
                }
                documents.append(json.dumps({"metadata": metadata, "current": {}}).encode())
            else:
                documents.append(b'{"current":%s,"metadata":%s}' % (v.body, json.dumps(metadata).encode()))
        joined = b",".join(documents)
        payload = b'{"_rid":"%s","Documents":[%s],"_count":%d}' % (container.rid.encode(), joined, len(documents))
        return (
            200,
            payload,
            {
                "etag": f'"{picked[-1].lsn}"',
                "x-ms-item-count": str(len(picked)),
                "x-ms-request-charge": _read_charge(len(joined)),
                **session,
            },
        )

    # --- point operations ----------------------------------------------------------
    def _pk_from_header(self, container: Container):
        raw = self.headers.get("x-ms-documentdb-partitionkey")
        if raw is None:
            raise CosmosError(
                400,
                "BadRequest",
                "x-ms-documentdb-partitionkey is required for a point operation on a partitioned container.",
            )
        try:
            components = parse_pk_header(raw)
        except ValueError as exc:
            raise CosmosError(400, "BadRequest", str(exc)) from None
        try:
            return container.pk_value(components)
        except ValueError as exc:  # a hierarchical key given in part: Cosmos answers PartitionKeyMismatch
            raise CosmosError(400, "BadRequest", str(exc), substatus=1001) from None

    def _session_headers(self, container: Container, epk: str) -> dict[str, str]:
        rng = container.range_for(epk)
        return {
            "x-ms-session-token": f"{rng.id}:-1#{rng.lsn}",
            "lsn": str(rng.lsn),
            "x-ms-documentdb-partitionkeyrangeid": rng.id,
        }

    def _read(self, container: Container, doc_id: str):
        pk = self._pk_from_header(container)
        entry = container.read(doc_id, pk)
        if entry is None:
            raise CosmosError(404, "NotFound", "Entity with the specified id does not exist in the system.")
        return 200, entry.body, {"etag": json.loads(entry.body)["_etag"], **self._session_headers(container, entry.epk)}

    def _write(self, container: Container, body: bytes, *, upsert: bool = False, replace_id: str | None = None):
        try:
            doc = json.loads(body)
        except ValueError:
            raise CosmosError(400, "BadRequest", "The request body is not valid JSON.") from None
        raw_pk = self.headers.get("x-ms-documentdb-partitionkey")
        if raw_pk is not None and isinstance(doc, dict):
            try:
                header = components_key(parse_pk_header(raw_pk))
            except ValueError as exc:
                raise CosmosError(400, "BadRequest", str(exc)) from None
            if header != components_key(container.doc_components(doc)):
                raise CosmosError(
                    400,
                    "BadRequest",
                    "PartitionKey extracted from document doesn't match the one specified in the header. "
                    f"Header: {raw_pk}; document ({', '.join(container.partition_key_paths)}): "
                    f"{components_key(container.doc_components(doc))}.",
                    substatus=1001,
                )
        if replace_id is not None and isinstance(doc, dict) and doc.get("id") != replace_id:
            raise CosmosError(400, "BadRequest", f"Body id {doc.get('id')!r} differs from the URL id {replace_id!r}.")
        must_exist = True if replace_id is not None else (None if upsert else False)
        try:
            entry = container.upsert(doc, must_exist=must_exist, record_versions=self.state.record_all_versions)
        except ValueError as exc:
            raise CosmosError(400, "BadRequest", str(exc)) from None
        except FileExistsError:
            raise CosmosError(409, "Conflict", "Entity with the specified id already exists in the system.") from None
        except KeyError:
            raise CosmosError(404, "NotFound", "Entity with the specified id does not exist in the system.") from None
        status = 201 if entry.created else 200
        return (
            status,
            entry.body,
            {
                "etag": json.loads(entry.body)["_etag"],
                "x-ms-request-charge": _write_charge(body),
                **self._session_headers(container, entry.epk),
            },
        )

    def _patch(self, container: Container, doc_id: str, body: bytes):
        """Partial document update (add/set/replace/remove/incr/move), applied to the stored document."""
        pk = self._pk_from_header(container)
        try:
            spec = json.loads(body)
            operations = spec["operations"]
            if spec.get("condition"):
                raise CosmosError(
                    400, "BadRequest", "Conditional patch (a filter predicate) is not served by this double."
                )
        except (ValueError, KeyError, TypeError):
            raise CosmosError(400, "BadRequest", 'The patch body must be {"operations": [...]}.') from None
        with container.lock:
            entry = container.read(doc_id, pk)
            if entry is None:
                raise CosmosError(404, "NotFound", "Entity with the specified id does not exist in the system.")
            doc = {
                k: v
                for k, v in json.loads(entry.body).items()
                if k not in ("_rid", "_self", "_etag", "_attachments", "_ts")
            }
            try:
                for op in operations:
                    _apply_patch(doc, op)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise CosmosError(400, "BadRequest", f"Patch operation {op!r} cannot be applied: {exc}") from None
            if doc.get("id") != doc_id or components_key(container.doc_components(doc)) != components_key(
                container.components(pk)
            ):
                raise CosmosError(400, "BadRequest", "A patch cannot change the id or the partition key.")
            return self._write(container, json.dumps(doc).encode(), replace_id=doc_id)

    def _delete(self, container: Container, doc_id: str):
        pk = self._pk_from_header(container)
        if not container.delete(doc_id, pk, record_versions=self.state.record_all_versions):
            raise CosmosError(404, "NotFound", "Entity with the specified id does not exist in the system.")
        return (
            204,
            None,
            {
                "x-ms-request-charge": _write_charge(b""),
                **self._session_headers(container, container.epk(container.components(pk))),
            },
        )

    # --- queries ---------------------------------------------------------------------
    def _parse_query_body(self, body: bytes) -> sql.Query:
        try:
            spec = json.loads(body)
            text = spec["query"] if isinstance(spec, dict) else spec
            params = {p["name"]: p["value"] for p in (spec.get("parameters") or [])} if isinstance(spec, dict) else {}
            return sql.parse(text, params)
        except sql.QueryError as exc:
            raise CosmosError(400, "BadRequest", f"Syntax error or unsupported query: {exc}") from None
        except (ValueError, KeyError, TypeError):
            raise CosmosError(
                400, "BadRequest", 'The query body must be {"query": ..., "parameters": [...]}.'
            ) from None

    def _query_plan(self, container: Container, body: bytes):
        query = self._parse_query_body(body)
        return 200, json.dumps(sql.query_plan(query)).encode(), {}

    def _cross_partition_query(self, container: Container, query: sql.Query):
        """One page of a streaming query over the whole container, one EPK segment (a range) at a time.

        The continuation names the segment [min, max) being read and the last seq returned in it, so it
        resumes there, and still does after that range split (its children cover the same segment).
        """
        lo, hi, after_seq = _cross_partition_token(self.headers.get("x-ms-continuation"))
        limit = self._page_size()
        results: list[bytes] = []
        next_token = None
        with container.lock:
            while True:
                if not hi:  # start of a segment: the range that holds its first EPK
                    rng = container.range_for(lo)
                    hi = rng.max
                # Every EPK is below "FF", so plain string order bounds the segment.
                overlapping = [r for r in container.ranges if r.min < hi and r.max > lo]
                if len(overlapping) == 1 and (overlapping[0].min, overlapping[0].max) == (lo, hi):
                    segment = overlapping[0].entries_by_seq()  # cached: no copy per page
                else:  # the segment's range split (or merged) since the token was issued
                    segment = sorted(
                        (e for r in overlapping for e in r.entries_by_seq() if lo <= e.epk < hi),
                        key=lambda e: e.seq,
                    )
                page, next_seq = sql.execute(query, segment, after_seq, limit - len(results))
                results += page
                if next_seq is not None:
                    next_token = {"min": lo, "max": hi, "seq": next_seq}
                    break
                if hi == "FF":
                    break
                lo, hi, after_seq = hi, "", 0
                if len(results) >= limit:
                    next_token = {"min": lo, "max": "", "seq": 0}
                    break
        joined = b",".join(results)
        headers = {"x-ms-item-count": str(len(results)), "x-ms-request-charge": _query_charge(len(joined))}
        if next_token is not None:
            headers["x-ms-continuation"] = json.dumps(next_token, separators=(",", ":"))
        payload = b'{"_rid":"%s","Documents":[%s],"_count":%d}' % (container.rid.encode(), joined, len(results))
        return 200, payload, headers

    def _query(self, container: Container, body: bytes, *, read_feed: bool = False):
        query = sql.parse("SELECT * FROM c", {}) if read_feed else self._parse_query_body(body)
        with container.lock:
            rng, epk_filter = self._target_range(container)
            if rng is None:
                pk_header = self.headers.get("x-ms-documentdb-partitionkey")
                pinned = sql.pinned_values(query) if pk_header is None and not read_feed else {}
                key_paths = [path_parts(p) for p in container.partition_key_paths]
                if pinned and all(p in pinned for p in key_paths):
                    pk_header = json.dumps([pinned[p] for p in key_paths])  # the filter names one full key
                if pk_header is not None:
                    try:
                        components = parse_pk_header(pk_header)
                        if len(components) > len(container.partition_key_paths) or (
                            container.partition_key_kind != "MultiHash"
                            and len(components) != len(container.partition_key_paths)
                        ):
                            container.pk_value(components)  # raises, naming the key's paths
                    except ValueError as exc:
                        raise CosmosError(400, "BadRequest", str(exc)) from None
                    epk_filter = container.epk_range(components)
                    rng = container.range_for(epk_filter[0])
                elif (
                    not read_feed
                    and (self.headers.get("x-ms-documentdb-query-enablecrosspartition") or "").lower() != "true"
                ):
                    # Cosmos asks for one or the other on any partitioned container, one physical range or many.
                    raise CosmosError(
                        400,
                        "BadRequest",
                        CROSS_PARTITION_DISABLED,
                    )  # substatus 0: the SDK raises it (1004 would send it to the query plan instead)
                elif len(container.ranges) == 1:
                    rng = container.ranges[0]
                elif not query.count:
                    # A streaming query (no TOP/ORDER BY/OFFSET/LIMIT/aggregate/DISTINCT/GROUP BY): the
                    # gateway serves it itself, range after range, with a continuation that resumes there.
                    return self._cross_partition_query(container, query)
                else:
                    # Like the real gateway: a cross-partition query it cannot serve answers with the plan.
                    plan = sql.query_plan(query)
                    raise CosmosError(
                        400,
                        "BadRequest",
                        "Cross partition query is required but disabled or cannot be served by the gateway.",
                        substatus=1004,
                        body={
                            "code": "BadRequest",
                            "message": "Cross partition query can not be directly served by the gateway.",
                            "additionalErrorInfo": json.dumps(plan),
                        },
                    )
            entries = rng.entries_by_seq()
            session = {
                "x-ms-session-token": f"{rng.id}:-1#{rng.lsn}",
                "lsn": str(rng.lsn),
                "x-ms-documentdb-partitionkeyrangeid": rng.id,
            }
        if epk_filter:
            entries = [
                e for e in entries if epk_filter[0] <= e.epk and (epk_filter[1] == "FF" or e.epk < epk_filter[1])
            ]
        continuation = self.headers.get("x-ms-continuation")
        try:
            after_seq = int(json.loads(continuation)["seq"]) if continuation else 0
        except (ValueError, KeyError, TypeError):
            raise CosmosError(
                400, "BadRequest", f"x-ms-continuation {continuation!r} was not issued by this account for this query."
            ) from None
        results, next_seq = sql.execute(query, entries, after_seq, self._page_size())
        joined = b",".join(results)
        headers = {"x-ms-item-count": str(len(results)), "x-ms-request-charge": _query_charge(len(joined)), **session}
        if next_seq is not None:
            headers["x-ms-continuation"] = json.dumps({"seq": next_seq, "range": rng.id})
        payload = b'{"_rid":"%s","Documents":[%s],"_count":%d}' % (container.rid.encode(), joined, len(results))
        return 200, payload, headers


def _apply_patch(doc: dict, op: dict) -> None:
    """One Cosmos patch operation on `doc` (paths like JSON Pointer: /a/b/0, "-" appends to an array)."""

    def locate(path: str) -> tuple[Any, str]:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts or not parts[-1]:
            raise ValueError(f"path {path!r} must name a property")
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    kind, path = op["op"], op["path"]
    if kind == "move":
        source, name = locate(op["from"])
        value = source.pop(int(name)) if isinstance(source, list) else source.pop(name)
        kind, op = "set", {"value": value}
    parent, name = locate(path)
    if kind == "remove":
        parent.pop(int(name)) if isinstance(parent, list) else parent.pop(name)
    elif kind == "incr":
        current = parent[int(name)] if isinstance(parent, list) else parent.get(name, 0)
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise TypeError(f"{path} is not a number")
        parent[int(name) if isinstance(parent, list) else name] = current + op["value"]
    elif kind in ("add", "set", "replace"):
        if isinstance(parent, list):
            if name == "-":
                parent.append(op["value"])
            elif kind == "add":
                parent.insert(int(name), op["value"])
            else:
                parent[int(name)] = op["value"]
        else:
            if kind == "replace" and name not in parent:
                raise KeyError(name)
            parent[name] = op["value"]
    else:
        raise ValueError(f"op {kind!r} is not one of add, set, replace, remove, incr, move")


def _cross_partition_token(raw: str | None) -> tuple[str, str, int]:
    """(min EPK, max EPK, seq) of a cross-partition continuation: entries of [min, max) after seq remain."""
    if not raw:
        return "", "", 0
    try:
        token = json.loads(raw)
        lo, hi, seq = token["min"], token["max"], int(token["seq"])
        if not isinstance(lo, str) or not isinstance(hi, str):
            raise TypeError
        return lo, hi, seq
    except (ValueError, KeyError, TypeError):
        raise CosmosError(
            400, "BadRequest", f"x-ms-continuation {raw!r} was not issued by this account for this query."
        ) from None


def serve_cosmos(state: CosmosGatewayState, ca: LocalCA | None) -> ServedDouble:
    """The gateway on 127.0.0.1 (HTTPS with `ca`; the SDK refuses AAD tokens over HTTP). Call .start()."""
    return ServedDouble(CosmosGatewayHandler, state, ca)
