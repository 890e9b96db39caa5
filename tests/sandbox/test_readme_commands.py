"""The README's sandbox commands work as written, in a fresh shell, from the repository root.

The block under "## The local sandbox" is fed line by line to one `bash` started with `env -i` (PATH and
HOME only: no virtualenv, no EXPORT_* variable), so a command that needs an activated virtualenv or a
variable set elsewhere fails here as it would for a newcomer. A line whose comment says `(exit 1)` must
exit 1; every other line must exit 0. The commands `up` prints are the README's (with `--dir`); its
`eval` lines are run as printed. The `aws` CLI line is not run (the AWS CLI is no requirement). `make demo` is left out: tests/sandbox/test_demo.py runs the demo.

The shell runs in a scratch directory holding `.venv` and `sandbox` as links to this checkout, so the
commands' default state directory (`.sandbox/`) is the scratch one, never a sandbox the developer runs.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FRESH_PATH = "/usr/local/bin:/usr/bin:/bin"


def readme_sandbox_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## The local sandbox\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's 'The local sandbox' section has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def _command(line: str) -> str:
    """The command without its comment and spacing (what `up` prints carries no comment)."""
    return " ".join(line.split("  #", 1)[0].split())


class Shell:
    """One bash process; `run(line)` sends a line and returns (output, exit code)."""

    def __init__(self, cwd: Path):
        self.process = subprocess.Popen(
            ["env", "-i", f"PATH={FRESH_PATH}", f"HOME={Path.home()}", "bash", "--noprofile", "--norc"],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.send("exec 2>&1")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def run(self, line: str) -> tuple[str, int]:
        marker = f"::done-{uuid.uuid4().hex}::"
        self.send(line)
        self.send(f'echo "{marker}$?"')
        assert self.process.stdout is not None
        out: list[str] = []
        for got in self.process.stdout:
            if got.startswith(marker):
                return "".join(out), int(got[len(marker) :])
            out.append(got)
        raise AssertionError(f"the shell ended during {line!r}:\n{''.join(out)[-3000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.send("exit")
            self.process.wait(timeout=30)


def test_readme_names_the_commands_with_the_virtualenv_path():
    for line in readme_sandbox_commands():
        for word in re.findall(r"(?:^|[\s(])((?:python|cosmos-export)\b)", line):
            pytest.fail(f"README runs {word!r} without the virtualenv's path: {line!r}")


@pytest.mark.timeout(420)
def test_readme_sandbox_commands_run_as_written_in_a_fresh_shell(tmp_path):
    for name in (".venv", "sandbox"):
        (tmp_path / name).symlink_to(REPO / name)
    lines = [line for line in readme_sandbox_commands() if not line.startswith("make ")]
    shell = Shell(tmp_path)
    try:
        for line in lines:
            out, code = shell.run(line)
            expected = 1 if "(exit 1)" in line else 0
            assert code == expected, f"{line!r} exited {code}, expected {expected}:\n{out[-4000:]}"
            if " -m sandbox change " in line:  # safe to rerun: the deletes are gone, no traceback
                again, code = shell.run(line)
                assert code == 0 and "10 of the 10 documents to delete were already gone" in again, again
            if "--break fic-subject" in line:
                assert "AADSTS700213" in out and "Set the FIC subject to the task role ARN exactly" in out, out
            if _command(line) == ".venv/bin/python -m sandbox up":
                printed = [p.strip() for p in out.splitlines() if p.startswith("  ")]
                readme = {_command(x) for x in lines}
                directory = str(tmp_path.resolve() / ".sandbox")
                for hint in printed:
                    if hint.startswith(".venv/bin/"):  # the README runs each of them
                        assert _command(hint).replace(f" --dir {directory}", "") in readme, hint
                    elif hint.startswith("eval"):  # as printed (absolute --dir; --aws too)
                        assert shell.run(hint)[1] == 0, hint
                # The export identity's environment as printed (the restore one may not read the sources).
                (worker_env,) = [h for h in printed if h.endswith(f'env --dir {directory})"')]
                assert shell.run(worker_env)[1] == 0
                out, code = shell.run(".venv/bin/cosmos-export doctor")
                assert code == 0, out
    finally:
        shell.run(".venv/bin/python -m sandbox down")
        shell.close()
