"""Management (resource) operations of the gateway double: databases, containers, offers.

On a real account these are served to the account key (and to Azure Resource Manager), never to an
AAD data-plane token: data-plane RBAC covers items, queries and the change feed only, and Cosmos
answers such a request 403/5300 "... cannot be authorized by AAD token in data plane" whatever roles
the principal holds. The gateway authorizes first (`CosmosGatewayState.authorize(management=...)`);
these handlers only run for the master key (or an account with no auth configured).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from sandbox.doubles.cosmos.store import MAX_PK_PATHS, Container, Database

if TYPE_CHECKING:
    from sandbox.doubles.cosmos.gateway import CosmosGatewayHandler

#: Throughput one physical partition serves on a new container (the SDK's tests: 30000 RU/s = 5 ranges).
RU_PER_PARTITION = 6000
MIN_THROUGHPUT = 400
#: Properties a container create/replace may carry; any other key is refused by name.
CONTAINER_PROPERTIES = {
    "id",
    "partitionKey",
    "indexingPolicy",
    "defaultTtl",
    "uniqueKeyPolicy",
    "conflictResolutionPolicy",
    "changeFeedPolicy",
    "analyticalStorageTtl",
    "computedProperties",
    "vectorEmbeddingPolicy",
    "fullTextPolicy",
    "geospatialConfig",
}
_SYSTEM = {"_rid", "_self", "_etag", "_ts", "_docs", "_sprocs", "_triggers", "_udfs", "_conflicts"}


def _error(status: int, code: str, message: str):
    from sandbox.doubles.cosmos.gateway import CosmosError

    return CosmosError(status, code, message)


def _json_body(body: bytes, what: str) -> dict:
    try:
        spec = json.loads(body or b"{}")
    except ValueError:
        raise _error(400, "BadRequest", f"The {what} request body is not valid JSON.") from None
    if not isinstance(spec, dict):
        raise _error(400, "BadRequest", f"The {what} request body must be a JSON object.")
    return spec


def _throughput(handler: CosmosGatewayHandler) -> int | None:
    raw = handler.headers.get("x-ms-offer-throughput")
    autoscale = handler.headers.get("x-ms-cosmos-offer-autopilot-settings")
    if raw is None and autoscale is None:
        return None
    try:
        value = int(raw) if raw is not None else int(json.loads(autoscale or "{}")["maxThroughput"])
    except (ValueError, KeyError, TypeError):
        raise _error(
            400, "BadRequest", f"x-ms-offer-throughput {raw or autoscale!r} is not a number of RU/s."
        ) from None
    if value < MIN_THROUGHPUT:
        raise _error(400, "BadRequest", f"The offer throughput {value} is below the minimum of {MIN_THROUGHPUT} RU/s.")
    return value


def database_resource(database: Database) -> dict:
    return {
        "id": database.id,
        "_rid": database.rid,
        "_self": f"dbs/{database.rid}/",
        "_etag": f'"{database.rid}"',
        "_colls": "colls/",
        "_users": "users/",
        "_ts": database.created_ts,
    }


def create_database(handler: CosmosGatewayHandler, body: bytes):
    spec = _json_body(body, "database")
    db_id = spec.get("id")
    if not isinstance(db_id, str) or not db_id or "/" in db_id:
        raise _error(400, "BadRequest", f"Database id {db_id!r} must be a non-empty string without '/'.")
    state = handler.state
    with state.lock:
        if db_id in state.databases:
            raise _error(409, "Conflict", "Resource with specified id, name, or unique index already exists.")
        database = state.add_database(db_id)
        database.offer_throughput = _throughput(handler)
    return 201, json.dumps(database_resource(database)).encode(), {}


def list_databases(handler: CosmosGatewayHandler):
    databases = [database_resource(d) for d in handler.state.databases.values()]
    payload = {"_rid": "", "Databases": databases, "_count": len(databases)}
    return 200, json.dumps(payload).encode(), {"x-ms-item-count": str(len(databases))}


def delete_database(handler: CosmosGatewayHandler, database: Database):
    with handler.state.lock:
        handler.state.databases.pop(database.id, None)
    return 204, None, {}


def _partition_key(spec: dict) -> tuple[list[str], str, int]:
    definition = spec.get("partitionKey")
    if not isinstance(definition, dict) or not isinstance(definition.get("paths"), list):
        raise _error(
            400,
            "BadRequest",
            f"partitionKey {definition!r} must be {{'paths': ['/pk'], 'kind': 'Hash'|'MultiHash', 'version': 1|2}}.",
        )
    kind = definition.get("kind", "Hash")
    version = definition.get("version", 1)  # Cosmos defaults to V1 when the definition names none
    return definition["paths"], kind, version


def create_container(handler: CosmosGatewayHandler, database: Database, body: bytes):
    spec = _json_body(body, "container")
    unknown = sorted(set(spec) - CONTAINER_PROPERTIES - _SYSTEM)
    if unknown:
        raise _error(
            400, "BadRequest", f"Container property {unknown[0]!r} is not one of {sorted(CONTAINER_PROPERTIES)}."
        )
    container_id = spec.get("id")
    if not isinstance(container_id, str) or not container_id or "/" in container_id:
        raise _error(400, "BadRequest", f"Container id {container_id!r} must be a non-empty string without '/'.")
    paths, kind, version = _partition_key(spec)
    if len(paths) > MAX_PK_PATHS:  # validated before the name: Cosmos answers 400 even for a taken id
        raise _error(
            400,
            "BadRequest",
            f"Too many partition key paths ({len(paths)}) specified. A maximum of {MAX_PK_PATHS} is allowed.",
        )
    try:
        Container.check_partition_key(paths, kind, version)
    except ValueError as exc:
        raise _error(400, "BadRequest", f"partitionKey: {exc}") from None
    _check_ttl(spec)  # before anything is created: a refused request leaves no container behind
    throughput = _throughput(handler)
    feed_ranges = max(1, math.ceil(throughput / RU_PER_PARTITION)) if throughput else 1
    state = handler.state
    with state.lock:
        if container_id in database.containers:
            raise _error(409, "Conflict", "Resource with specified id, name, or unique index already exists.")
        container = state.create_container(database.id, container_id, paths, feed_ranges, kind=kind, version=version)
        _set_properties(container, spec)
        container.offer_throughput = throughput or (None if database.offer_throughput else MIN_THROUGHPUT)
    return 201, handler._container(container)[1], {}


def _check_ttl(spec: dict) -> None:
    ttl = spec.get("defaultTtl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl == 0 or ttl < -1):
        raise _error(
            400, "BadRequest", f"defaultTtl {ttl!r} must be -1 (on, no default) or a positive number of seconds."
        )


def _set_properties(container: Container, spec: dict) -> None:
    _check_ttl(spec)
    container.properties = {
        k: v for k, v in spec.items() if k in CONTAINER_PROPERTIES and k not in ("id", "partitionKey")
    }


def replace_container(handler: CosmosGatewayHandler, container: Container, body: bytes):
    spec = _json_body(body, "container")
    if spec.get("id") != container.id:
        raise _error(400, "BadRequest", f"Body id {spec.get('id')!r} differs from the URL id {container.id!r}.")
    if "partitionKey" in spec and spec["partitionKey"].get("paths") != container.partition_key_paths:
        raise _error(400, "BadRequest", "The partition key of a container cannot be changed.")
    unknown = sorted(set(spec) - CONTAINER_PROPERTIES - _SYSTEM)
    if unknown:
        raise _error(
            400, "BadRequest", f"Container property {unknown[0]!r} is not one of {sorted(CONTAINER_PROPERTIES)}."
        )
    _set_properties(container, spec)
    return handler._container(container)[:2] + ({},)


def list_containers(handler: CosmosGatewayHandler, database: Database):
    containers = [json.loads(handler._container(c)[1]) for c in database.containers.values()]
    payload = {"_rid": database.rid, "DocumentCollections": containers, "_count": len(containers)}
    return 200, json.dumps(payload).encode(), {"x-ms-item-count": str(len(containers))}


def delete_container(handler: CosmosGatewayHandler, container: Container):
    with handler.state.lock:
        container.database.containers.pop(container.id, None)
    return 204, None, {}


# --- offers ---------------------------------------------------------------------------------------
def _offers(handler: CosmosGatewayHandler) -> list[dict]:
    offers = []
    for database in handler.state.databases.values():
        owners: list[tuple[Any, str, str]] = [(database, database.rid, f"dbs/{database.rid}/")]
        owners += [(c, c.rid, f"dbs/{database.rid}/colls/{c.rid}/") for c in database.containers.values()]
        for owner, rid, link in owners:
            if owner.offer_throughput is None:
                continue
            offers.append(
                {
                    "id": rid,
                    "_rid": rid,
                    "_self": f"offers/{rid}/",
                    "_etag": f'"{rid}-{owner.offer_throughput}"',
                    "offerVersion": "V2",
                    "offerType": "Invalid",
                    "resource": link,
                    "offerResourceId": rid,
                    "content": {"offerThroughput": owner.offer_throughput},
                    "_ts": database.created_ts,
                }
            )
    return offers


def query_offers(handler: CosmosGatewayHandler, body: bytes):
    spec = _json_body(body, "offer query")
    params = {p.get("name"): p.get("value") for p in spec.get("parameters") or []}
    offers = _offers(handler)
    if "@link" in params:  # the SDK's only offer query: SELECT * FROM root r WHERE r.resource=@link
        offers = [o for o in offers if o["resource"] == params["@link"]]
    payload = {"_rid": "", "Offers": offers, "_count": len(offers)}
    return 200, json.dumps(payload).encode(), {"x-ms-item-count": str(len(offers))}


def _owner(handler: CosmosGatewayHandler, offer_id: str):
    for database in handler.state.databases.values():
        if database.rid == offer_id:
            return database
        for container in database.containers.values():
            if container.rid == offer_id:
                return container
    raise _error(404, "NotFound", f"Offer {offer_id} does not exist.")


def read_offer(handler: CosmosGatewayHandler, offer_id: str):
    _owner(handler, offer_id)
    (offer,) = [o for o in _offers(handler) if o["id"] == offer_id]
    return 200, json.dumps(offer).encode(), {}


def replace_offer(handler: CosmosGatewayHandler, offer_id: str, body: bytes):
    owner = _owner(handler, offer_id)
    spec = _json_body(body, "offer")
    value = (spec.get("content") or {}).get("offerThroughput")
    if not isinstance(value, int) or isinstance(value, bool) or value < MIN_THROUGHPUT:
        raise _error(
            400, "BadRequest", f"content.offerThroughput {value!r} must be a number of RU/s >= {MIN_THROUGHPUT}."
        )
    owner.offer_throughput = value
    return read_offer(handler, offer_id)
