"""Render docs/status.png: `cosmos-export status` for a real sandbox run (the picture in README's Operations).

    .venv/bin/pip install cairosvg==2.9.1   # SVG -> PNG (needs the system's libcairo2); not a project dependency
    .venv/bin/python docs/status_picture.py

Starts the sandbox (stack dev, the gateway double), seeds it, runs the real worker (snapshot, changes,
incremental), leaves one killed run's orphaned part behind and a passed drill report, then draws the status
table with rich, exports it as SVG (rich's `Console.save_svg`) and converts that to PNG with cairosvg.
Everything started is stopped again.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosmos_export import contract, layout, status  # noqa: E402
from sandbox import serve as sb  # noqa: E402
from sandbox.demo import Demo, _s3, _target, change, seed  # noqa: E402

OUT = ROOT / "docs" / "status.png"


def main() -> int:
    import cairosvg
    from rich.console import Console

    directory = ROOT / ".sandbox" / "status-picture"
    directory.mkdir(parents=True, exist_ok=True)
    demo = Demo(directory)
    try:
        state = sb.up(directory, "dev", "gateway")
        seed(state, 2000)
        demo.worker_cmd(state, "run", "--mode", "snapshot")
        change(state, 2000)
        demo.worker_cmd(state, "run", "--mode", "incremental")
        s3, first = _s3(state), state["containers"][0]
        target = _target(state, first)
        # A run killed two hours ago left a part behind (the next commit's cleanup removes it).
        killed_at = datetime.now(timezone.utc) - timedelta(hours=2)
        key = layout.part_key(
            target,
            run_id=layout.new_run_id(killed_at),
            started_at=killed_at,
            feed_range_index=0,
            part_number=1,
            compression="zstd",
        )
        s3.put_object(Bucket=state["bucket"], Key=key, Body=b"\0" * 48_000)
        drill_at = datetime.now(timezone.utc) - timedelta(minutes=5)
        s3.put_object(
            Bucket=state["bucket"],
            Key=f"{target.container_prefix}/{contract.DRILLS_DIR}/{drill_at:%Y%m%dT%H%M%S%fZ}.json",
            Body=json.dumps(
                {
                    "ok": True,
                    "drill_finished_at": drill_at.isoformat(timespec="seconds"),
                    "sequence": 2,
                    "documents_mismatched": 0,
                }
            ).encode(),
        )
        statuses = status.collect(
            s3,
            bucket=state["bucket"],
            prefix=state["prefix"],
            account=state["cosmos_account"],
            database=state["database"],
            containers=state["containers"],
        )
        console = Console(record=True, width=175, file=io.StringIO())
        console.print(status.table(statuses, max_age_seconds=26 * 3600))
        # rich asks for Fira Code (a web font); name a monospace font cairo has, so the box lines align.
        svg = console.export_svg(title="cosmos-export status (sandbox, stack dev)").replace(
            "font-family: Fira Code, monospace", "font-family: DejaVu Sans Mono, monospace"
        )
        cairosvg.svg2png(bytestring=svg.encode(), write_to=str(OUT), output_width=1800)
        print(console.export_text())
        print(f"wrote {OUT}")
        return 0
    finally:
        demo.stop_worker()
        sb.down(directory)


if __name__ == "__main__":
    sys.exit(main())
