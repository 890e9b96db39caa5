"""Transactional batch in the Cosmos gateway double, as the service answers `ContainerProxy.execute_item_batch`.

The SDK POSTs the operations as a JSON list to `.../colls/<c>/docs` with `x-ms-cosmos-is-batch-request`,
`x-ms-cosmos-batch-atomic` and the batch's partition key in `x-ms-documentdb-partitionkey`. The service's
rules, kept here (on purpose not imported from the worker, so a wrong limit there cannot agree with itself):
- at most 100 operations (400 otherwise) and a request of at most 2 MB (413), nothing executed;
- every operation in the one logical partition of the header: a body whose partition key differs fails
  with 400;
- atomic: if any operation fails (Create of an existing id 409, Replace/Read/Delete of a missing one 404,
  a bad body 400), nothing is written, the answer is 207 Multi-Status, the failed operation carries its
  status and every other one 424 (Failed Dependency);
- the request charge is the sum of the operations' (writes ~5.7 RU per started KB, as point writes);
- each operation needs the data action of its type (upsert, create, replace, read, delete).
Each applied operation is counted in the state's stats as ("batch.<type>", status), beside the requests'
("item.batch", status), so tests can count documents written however they were sent.
Non-atomic (bulk) batches and Patch are not served (400), so a client that relies on them fails here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sandbox.doubles.cosmos import rbac
from sandbox.doubles.cosmos.store import components_key, parse_pk_header

if TYPE_CHECKING:
    from sandbox.doubles.cosmos.gateway import CosmosGatewayHandler
    from sandbox.doubles.cosmos.store import Container

MAX_OPERATIONS = 100
MAX_REQUEST_BYTES = 2 * 1024 * 1024
_ACTIONS = {
    "Create": rbac.ITEM_CREATE,
    "Upsert": rbac.ITEM_UPSERT,
    "Replace": rbac.ITEM_REPLACE,
    "Read": rbac.ITEM_READ,
    "Delete": rbac.ITEM_DELETE,
}
_WITH_BODY = ("Create", "Upsert", "Replace")


def _error(status: int, code: str, message: str) -> Exception:
    from sandbox.doubles.cosmos.gateway import CosmosError

    return CosmosError(status, code, message)


def _write_charge(size: int) -> float:
    return round(5.71 * max(1, -(-size // 1024)), 2)


class _Failed(Exception):
    def __init__(self, status: int, message: str, charge: float = 1.0):
        super().__init__(message)
        self.status, self.message, self.charge = status, message, charge


def _operations(handler: CosmosGatewayHandler, container: Container, body: bytes) -> tuple[list[dict], Any]:
    """The request's operations and partition key value, or the whole request refused (nothing executed)."""
    h = handler.headers
    if (h.get("x-ms-cosmos-batch-atomic") or "").lower() != "true":
        raise _error(400, "BadRequest", "Only atomic transactional batches are served by this double.")
    if len(body) > MAX_REQUEST_BYTES:
        raise _error(413, "RequestEntityTooLarge", f"Request size {len(body)} is too large (at most 2 MB).")
    try:
        operations = json.loads(body)
    except ValueError:
        raise _error(400, "BadRequest", "The batch request body is not valid JSON.") from None
    if not isinstance(operations, list) or not operations or not all(isinstance(o, dict) for o in operations):
        raise _error(400, "BadRequest", "The batch request must be a non-empty JSON list of operations.")
    if len(operations) > MAX_OPERATIONS:
        raise _error(
            400,
            "BadRequest",
            f"Batch request has more operations ({len(operations)}) than what is supported ({MAX_OPERATIONS}).",
        )
    unknown = sorted({str(o.get("operationType")) for o in operations} - set(_ACTIONS))
    if unknown:
        raise _error(400, "BadRequest", f"Batch operation type(s) {', '.join(unknown)} not served by this double.")
    raw = h.get("x-ms-documentdb-partitionkey")
    if raw is None:
        raise _error(400, "BadRequest", "x-ms-documentdb-partitionkey is required for a transactional batch.")
    try:
        return operations, container.pk_value(parse_pk_header(raw))
    except ValueError as exc:
        raise _error(400, "BadRequest", str(exc)) from None


def _check(container: Container, op: dict, pk_value: Any, exists: dict[str, bool]) -> tuple[str, float]:
    """One operation against the state as the operations before it left it: its id and charge, or _Failed."""
    kind = op["operationType"]
    doc = op.get("resourceBody")
    if kind in _WITH_BODY:
        if not isinstance(doc, dict):
            raise _Failed(400, "The operation's resourceBody must be a JSON object.")
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or not doc_id:
            raise _Failed(400, f"The document id {doc_id!r} must be a non-empty string.")
        if kind == "Replace" and op.get("id") != doc_id:
            raise _Failed(400, f"Body id {doc_id!r} differs from the operation's id {op.get('id')!r}.")
        if components_key(container.doc_components(doc)) != components_key(container.components(pk_value)):
            raise _Failed(400, "PartitionKey extracted from document doesn't match the one specified in the header.")
    else:
        doc_id = op.get("id")
        if not isinstance(doc_id, str) or not doc_id:
            raise _Failed(400, f"The operation's id {doc_id!r} must be a non-empty string.")
    present = exists[doc_id] if doc_id in exists else container.read(doc_id, pk_value) is not None
    if kind == "Create" and present:
        raise _Failed(409, "Entity with the specified id already exists in the system.")
    if kind in ("Replace", "Read", "Delete") and not present:
        raise _Failed(404, "Entity with the specified id does not exist in the system.")
    exists[doc_id] = kind != "Delete"
    size = len(json.dumps(doc, separators=(",", ":"))) if doc is not None else 0
    return doc_id, (1.0 if kind == "Read" else _write_charge(size))


def execute(handler: CosmosGatewayHandler, container: Container, body: bytes):
    """(status, body, headers) of one transactional batch: every operation applied in order, or none."""
    operations, pk_value = _operations(handler, container, body)
    state = handler.state
    for action in sorted({_ACTIONS[o["operationType"]] for o in operations}):
        state.authorize(
            handler.headers.get("authorization"),
            handler.headers.get("Host", "127.0.0.1"),
            action,
            f"/dbs/{container.database.id}/colls/{container.id}",
            signed=handler.signed,
        )
    results: list[dict[str, Any]] = []
    with container.lock:  # validated and applied under one lock: no other write sees half a batch
        exists: dict[str, bool] = {}
        charges: list[float] = []
        for index, op in enumerate(operations):
            try:
                charges.append(_check(container, op, pk_value, exists)[1])
            except _Failed as failed:
                results = [{"statusCode": 424, "requestCharge": 0.0} for _ in operations]
                results[index] = {
                    "statusCode": failed.status,
                    "requestCharge": failed.charge,
                    "message": failed.message,
                }
                charge = sum(charges) + failed.charge
                return 207, json.dumps(results).encode(), {"x-ms-request-charge": f"{charge:.2f}"}
        for op, charge in zip(operations, charges):
            kind = op["operationType"]
            result: dict[str, Any] = {"requestCharge": charge}
            if kind == "Delete":
                container.delete(op["id"], pk_value, record_versions=state.record_all_versions)
                result["statusCode"] = 204
            elif kind == "Read":
                entry = container.read(op["id"], pk_value)
                assert entry is not None  # checked above, under the same lock
                result.update(statusCode=200, resourceBody=json.loads(entry.body))
            else:
                must_exist = {"Create": False, "Replace": True, "Upsert": None}[kind]
                entry = container.upsert(
                    op["resourceBody"], must_exist=must_exist, record_versions=state.record_all_versions
                )
                result.update(statusCode=201 if entry.created else 200, resourceBody=json.loads(entry.body))
            if "resourceBody" in result:
                result["eTag"] = result["resourceBody"]["_etag"]
            results.append(result)
    for op, result in zip(operations, results):
        state.count(f"batch.{op['operationType'].lower()}", result["statusCode"])
    headers = {
        "x-ms-request-charge": f"{sum(charges):.2f}",
        **handler._session_headers(container, container.epk(container.components(pk_value))),
    }
    return 200, json.dumps(results).encode(), headers
