"""A stand-in for `cosmos_export.materialize` until that module lands (then `install` does nothing).

The latest snapshot at or before the sequence plus every incremental after it, last write per
(partition key, id) in manifest order, sorted by key; the container definition is the double's (/pk, Hash
V2). `python -m tests.runtime.interim_materialize ARGS` runs the `cosmos-export` CLI with it installed, so
subprocess tests can kill a real CLI process.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from cosmos_export import jsonl, restore
from cosmos_export.commit import CommitStore


def has_materialize() -> bool:
    try:
        import cosmos_export.materialize  # noqa: F401
    except ImportError:
        return False
    return True


def open_state_with(partition_key_path: Callable[[Any], str]) -> Callable[..., restore.StateView]:
    def open_state(s3: Any, source_target: Any, *, sequence: int | None, as_of: Any) -> restore.StateView:
        manifests = CommitStore(s3, source_target).committed_manifests()
        if not manifests:
            raise restore.RestoreRefused(f"no committed export of {source_target.container}")
        if as_of is not None:
            manifests = [m for m in manifests if m.finished_at <= as_of]
            if not manifests:
                raise restore.RestoreRefused(f"--as-of {as_of.isoformat()} is before the first run")
        elif sequence is not None:
            if sequence not in {m.sequence for m in manifests}:
                raise restore.RestoreRefused(f"sequence {sequence} is not committed")
            manifests = [m for m in manifests if m.sequence <= sequence]
        start = max(i for i, m in enumerate(manifests) if m.mode != "incremental")
        chain = manifests[start:]
        docs: dict = {}
        for m in chain:
            for part in m.parts:
                body = s3.get_object(Bucket=source_target.bucket, Key=part.key)["Body"].read()
                for line in jsonl.decompress(body, jsonl.compression_of_key(part.key)).splitlines():
                    d = restore.user_properties(json.loads(line))
                    docs[(json.dumps(d.get("pk")), d["id"])] = d
        definition = {"partitionKey": {"paths": [partition_key_path(source_target)], "kind": "Hash", "version": 2},
                      "indexingPolicy": {"indexingMode": "consistent", "automatic": True,
                                         "includedPaths": [{"path": "/*"}], "excludedPaths": []}}
        return restore.StateView(
            sequence=chain[-1].sequence,
            manifest_keys=[f"{source_target.manifests_prefix}{m.sequence:010d}.json" for m in chain],
            container_definition=definition,
            report={"deletes_applied": 0, "unknown_delete_incrementals": len(chain) - 1},
            documents=lambda: iter([docs[k] for k in sorted(docs)]))

    return open_state


def install(monkeypatch: Any, partition_key_path: Callable[[Any], str] = lambda _t: "/pk") -> None:
    if not has_materialize():
        monkeypatch.setattr(restore, "open_state", open_state_with(partition_key_path))


if __name__ == "__main__":
    if not has_materialize():
        restore.open_state = open_state_with(lambda _t: "/pk")  # type: ignore[assignment]
    from cosmos_export.cli import main

    sys.exit(main(sys.argv[1:]))
