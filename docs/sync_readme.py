"""Copy the generated reports into README.md between their markers.

`make bench` and `make reliability-report` regenerate docs/performance.md and
docs/reliability.md, then run this so the README's sections show the same
figures, and regenerate the "Who can move data" table (docs/who_can_move_data.py). Only the text between `<!-- BEGIN <name> -->` and `<!-- END <name> -->`
changes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"performance": ROOT / "docs" / "performance.md", "reliability": ROOT / "docs" / "reliability.md"}


def embed(readme: str, name: str, body: str) -> str:
    # The report's own title is replaced by the README's section heading.
    body = re.sub(r"\A# [^\n]*\n+", "", body.strip() + "\n")
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)  # nest its headings
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no <!-- BEGIN {name} --> ... <!-- END {name} --> block; add it back")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), readme)


def main() -> int:
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    for name, path in SECTIONS.items():
        if path.exists():
            readme = embed(readme, name, path.read_text(encoding="utf-8"))
    # "Who can move data": generated from the programs' own policies (under mocks, a few seconds).
    import who_can_move_data

    readme = who_can_move_data.embed(readme, who_can_move_data.table())
    readme_path.write_text(readme, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
