"""Reading Cosmos DB: feed ranges, their change feed, and query snapshots.

Continuations. With `feed_range=` the SDK (4.17, ChangeFeedFetcherV2) keeps a
*composite* state: base64 of JSON `{"v": "v2", "rid": <container rid>, "mode":
..., "startFrom": ..., "continuation": {"range": <the feed range's EPK range>,
"continuation": [{"range": <sub-range>, "token": <etag/LSN>}, ...]}}`. When a
physical partition splits (410/1002) the SDK replaces the gone sub-range by its
children, each inheriting the etag, so a stored continuation for the original
feed range stays valid after a split and covers the new partitions: incremental
runs therefore iterate the feed ranges stored in the checkpoint, not the
current ones.

The SDK reports that token through `client.last_response_headers`, which is
shared by every thread using the client (azure-sdk-for-python issue 35328).
Each reader here passes its own `response_hook`: the hook receives the very
headers dict whose `etag` the fetcher then rewrites to the composite token, so
after each page the reader's own captured headers hold its own continuation.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy, CosmosClient, documents, exceptions
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from cosmos_export import contract, sdk_json
from cosmos_export.settings import WorkerSettings
from cosmos_export.throughput import Throughput

#: Bounded budget for errors the SDK does not retry itself (RBAC propagation, 503, resets).
RETRY_SECONDS = 300.0
RETRY_ATTEMPTS = 12
RETRY_WAIT_MAX_SECONDS = 30.0


class SourceError(Exception):
    """A Cosmos problem the operator must fix (message names it)."""


def is_transient(error: BaseException) -> bool:
    """403/5300 (role assignment not propagated yet), 503 and connection resets; everything else fails loudly.

    The SDK already retries 429 (honouring x-ms-retry-after-ms) and handles 410 splits itself.
    """
    if isinstance(error, exceptions.CosmosHttpResponseError):
        return (error.status_code == 403 and error.sub_status == 5300) or error.status_code == 503
    return isinstance(error, (ServiceRequestError, ServiceResponseError, ConnectionError))


def is_throttled(error: BaseException) -> bool:
    """A 429 the SDK's own retries (honouring x-ms-retry-after-ms) did not get past."""
    return isinstance(error, exceptions.CosmosHttpResponseError) and error.status_code == 429


def retrying(
    budget_seconds: float | None = None, attempts: int | None = None, wait_max: float | None = None
) -> Retrying:
    # The module constants are read here, per call, not bound as defaults: tests (and embedders) shorten them.
    budget = RETRY_SECONDS if budget_seconds is None else budget_seconds
    tries = RETRY_ATTEMPTS if attempts is None else attempts
    longest = RETRY_WAIT_MAX_SECONDS if wait_max is None else wait_max
    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_delay(budget) | stop_after_attempt(tries),
        wait=wait_exponential_jitter(initial=min(0.5, longest), max=longest),
        reraise=True,
    )


def cosmos_client(settings: WorkerSettings, credential: Any) -> CosmosClient:
    sdk_json.install()
    kwargs: dict[str, Any] = {
        # The SDK retries 429 itself, honouring x-ms-retry-after-ms; an export can afford to wait longer
        # than the interactive defaults (9 attempts / 30 s).
        "retry_total": 30,
        "retry_backoff_max": 120,
        "connection_timeout": 60,
    }
    if settings.cosmos_tls_verify is False:
        kwargs["connection_verify"] = False
    elif isinstance(settings.cosmos_tls_verify, str):
        kwargs["connection_verify"] = settings.cosmos_tls_verify
        # azure-cosmos 4.17 turns verification off for 127.0.0.1/localhost unless an ssl_config is given.
        kwargs["ssl_config"] = documents.SSLConfiguration()
    for attempt in retrying():
        with attempt:
            # The constructor reads the account: the first call that needs RBAC to have propagated.
            return CosmosClient(settings.cosmos_endpoint, credential=credential, **kwargs)
    raise AssertionError("unreachable")


def check_consistency(client: CosmosClient, minimum: str) -> str:
    """The account's default consistency; SourceError when it is weaker than `minimum`."""
    policy = client.get_database_account().ConsistencyPolicy or {}
    level = policy.get("defaultConsistencyLevel")
    if not isinstance(level, str) or level not in contract.CONSISTENCY_LEVELS:
        raise SourceError(f"the account reports an unknown consistency level {level!r}")
    if contract.CONSISTENCY_LEVELS.index(level) < contract.CONSISTENCY_LEVELS.index(minimum):
        raise SourceError(
            f"account consistency {level} is weaker than the required minimum {minimum} "
            f"({contract.Env.MIN_CONSISTENCY}); raise the account's default consistency to {minimum} or lower "
            f"{contract.Env.MIN_CONSISTENCY} (Pulumi config cosmos-s3-export:minConsistency) if {level} is acceptable"
        )
    return level


@dataclass
class Page:
    #: dicts; in raw mode (`FeedRangeReader(raw=True)`, change feed) each document's own bytes (`msgspec.Raw`).
    docs: list[Any]
    #: Continuation after this page (change feed: the composite token; query: None).
    continuation: str | None
    activity_id: str | None
    request_charge: float


class _Hook:
    """Per-reader response hook: this reader's own headers, never the client's shared ones.

    Also its `raw_response_hook`: called for every HTTP response, so it sees the 429s the SDK retries
    (the response hook sees only the last response of a request).
    """

    def __init__(self) -> None:
        self.headers: Any = None
        self.charge = 0.0
        self.activity_id: str | None = None
        self.throttled = 0  # 429 responses so far

    def raw(self, pipeline_response: Any) -> None:
        if getattr(pipeline_response.http_response, "status_code", None) == 429:
            self.throttled += 1

    def __call__(self, headers: Any, _body: Any) -> None:
        self.headers = headers
        self.activity_id = headers.get("x-ms-activity-id") or self.activity_id
        try:
            self.charge += float(headers.get("x-ms-request-charge") or 0)
        except ValueError:
            pass

    def take(self) -> tuple[str | None, float]:
        activity, charge = self.activity_id, self.charge
        self.charge, self.activity_id = 0.0, None
        return activity, charge

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag") if self.headers is not None else None


_END = object()


class FeedRangeReader:
    """Reads one feed range of one container; safe to run one per thread on a shared client."""

    def __init__(
        self,
        container: ContainerProxy,
        feed_range: dict,
        settings: WorkerSettings,
        stop: threading.Event | None = None,
        throughput: Throughput | None = None,
        raw: bool = False,
    ):
        self.container, self.feed_range, self.settings = container, feed_range, settings
        #: Change-feed pages hand over each document's bytes unparsed (sdk_json.raw_documents): the export's reads.
        self.raw = raw
        self.stop = stop or threading.Event()
        #: Shared by every reader of a run: the RU budget and the adaptive concurrency.
        self.throughput = throughput or Throughput.of(None, settings.concurrency)

    def _options(self, hook: _Hook) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_item_count": self.settings.page_size,
            "response_hook": hook,
            "raw_response_hook": hook.raw,
        }
        if self.settings.priority:
            options["priority"] = self.settings.priority
        return options

    def change_feed(
        self, *, continuation: str | None = None, start_time: str = "Beginning", mode: str | None = None
    ) -> Iterator[Page]:
        """Pages of the change feed from `continuation` (or `start_time`), until the current end.

        After the generator is exhausted, `self.continuation` is where the next run resumes.
        """
        mode = mode or self.settings.change_feed_mode
        self.continuation = continuation
        hook = _Hook()

        def pager(cont: str | None) -> Iterator[Any]:
            kwargs = self._options(hook)
            if cont:
                kwargs["continuation"] = cont
            else:
                kwargs.update(feed_range=self.feed_range, start_time=start_time, mode=mode)
            return self.container.query_items_change_feed(**kwargs).by_page()

        yield from self._pages(pager, hook, resumable=True)
        self.continuation = hook.etag or self.continuation

    def now_continuation(self, mode: str | None = None) -> str | None:
        """The feed range's continuation at this instant (taken before a query snapshot so nothing is missed).

        None when a stop was requested (SIGTERM) before the change feed answered.
        """
        pages = list(self.change_feed(start_time="Now", mode=mode))
        if pages and any(p.docs for p in pages):
            raise SourceError("the change feed returned documents for start_time='Now'")  # cannot happen
        if not self.continuation and self.stop.is_set():
            return None
        if not self.continuation:
            raise SourceError(f"no change-feed continuation for feed range {self.feed_range}")
        return self.continuation

    def query(self, where: str | None = None) -> Iterator[Page]:
        """Pages of `SELECT * FROM c [WHERE ...]` restricted to this feed range."""
        sql = "SELECT * FROM c" + (f" WHERE {where}" if where else "")
        hook = _Hook()

        scope: dict[str, Any] = {"feed_range": self.feed_range}
        if is_whole_container(self.feed_range):
            # One range covering every key: a plain cross-partition query is the same set of documents.
            scope = {"enable_cross_partition_query": True}

        def pager(cont: str | None) -> Iterator[Any]:
            return self.container.query_items(sql, **scope, **self._options(hook)).by_page()

        # A query continuation is not captured per request, so a failure after the first page is not resumed.
        yield from self._pages(pager, hook, resumable=False)

    def _pages(
        self, make_pager: Callable[[str | None], Iterator[Any]], hook: _Hook, *, resumable: bool
    ) -> Iterator[Page]:
        pager: Iterator[Any] | None = None
        cont = getattr(self, "continuation", None) if resumable else None
        started = False
        throughput = self.throughput
        # A change feed resumes from its last continuation, so a 429 that got past the SDK's retries is retried
        # here too (with the concurrency lowered); a query cannot resume after its first page.
        retry_if = (lambda e: is_transient(e) or is_throttled(e)) if resumable else is_transient
        raw_mode = sdk_json.raw_documents if self.raw and resumable else contextlib.nullcontext
        while not self.stop.is_set():
            page: Any = None
            for attempt in retrying().copy(retry=retry_if_exception(retry_if)):
                with attempt:
                    if started and not resumable and pager is None:
                        raise SourceError("query page failed after earlier pages were read; rerun the export")
                    throttled_before = hook.throttled
                    try:
                        with throughput.request(lambda: hook.charge), raw_mode():
                            if pager is None:
                                pager = make_pager(cont)
                            page = next(pager, _END)
                            if page is not _END:
                                page = list(page)
                    except Exception as e:
                        pager = None  # rebuild from the last good continuation
                        exhausted = is_throttled(e)
                        throughput.concurrency.record(
                            throttle_retries=hook.throttled - throttled_before - exhausted, exhausted=exhausted
                        )
                        raise
                    throughput.concurrency.record(throttle_retries=hook.throttled - throttled_before)
            if page is _END:
                return
            started = True
            activity, charge = hook.take()
            if resumable:
                cont = hook.etag or cont
                self.continuation = cont
            yield Page(page, cont if resumable else None, activity, charge)


def is_whole_container(feed_range: dict) -> bool:
    bounds = feed_range.get("Range", {})
    return bounds.get("min") == "" and bounds.get("max") == "FF"


def container_client(client: CosmosClient, database: str, container: str) -> ContainerProxy:
    return container_and_properties(client, database, container)[0]


def container_and_properties(client: CosmosClient, database: str, container: str) -> tuple[ContainerProxy, dict]:
    """The container and its properties (partition key, indexing policy, TTL, ...): a readMetadata call."""
    proxy = client.get_database_client(database).get_container_client(container)
    for attempt in retrying():
        with attempt:
            try:
                return proxy, proxy.read()
            except exceptions.CosmosResourceNotFoundError:
                raise SourceError(
                    f"container {database}/{container} does not exist at this account; check "
                    f"{contract.Env.COSMOS_DATABASE} / {contract.Env.COSMOS_CONTAINERS}"
                ) from None
    raise AssertionError("unreachable")


def document_count(container: ContainerProxy) -> int | None:
    """The container's document count as Cosmos reports it (x-ms-resource-usage), for the progress bar's ETA.

    None when the account does not say; never fatal (the bar then shows the rate only).
    """
    seen: dict[str, str] = {}
    try:
        container.read(
            populate_quota_info=True,
            response_hook=lambda headers, _body: seen.update({k.lower(): v for k, v in headers.items()}),
        )
    except exceptions.CosmosHttpResponseError:
        return None
    match = re.search(r"(?:^|;)documentsCount=(\d+)", seen.get("x-ms-resource-usage", ""))
    return int(match.group(1)) if match else None


def feed_ranges(container: ContainerProxy) -> list[dict]:
    for attempt in retrying():
        with attempt:
            # Fresh, not the routing map cached by the client: a split since start must show up in a snapshot.
            return list(container.read_feed_ranges(force_refresh=True))
    raise AssertionError("unreachable")


def explain_cosmos_error(error: BaseException, settings: WorkerSettings) -> str:
    if isinstance(error, exceptions.CosmosHttpResponseError):
        first = (error.message or "").splitlines()[0] if error.message else ""
        if error.status_code == 403:
            return (
                f"Cosmos refused the request (403/{error.sub_status}): {first} Give the service principal a SQL "
                f"role assignment with the data actions {', '.join(contract.COSMOS_DATA_ACTIONS)} on "
                f"/dbs/{settings.cosmos_database} or its containers (Pulumi config "
                f"cosmos-s3-export:cosmosContainers) and run `pulumi up`; a new assignment can take minutes."
            )
        if error.status_code == 401:
            return (
                f"Cosmos rejected the Entra token (401): {first} Check {contract.Env.COSMOS_ENDPOINT} and "
                f"{contract.Env.AZURE_TENANT_ID}, and that local auth is not the only one allowed."
            )
        return f"Cosmos request failed ({error.status_code}/{error.sub_status}): {first}"
    return f"Cosmos request failed: {error}"
