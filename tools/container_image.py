"""Build and run the worker image without a Docker daemon: buildah and podman from Debian's packages.

    .venv/bin/python tools/container_image.py tools        # install buildah/podman/mmdebstrap (root, apt)
    .venv/bin/python tools/container_image.py build [--arch amd64|arm64]

`runtime/Dockerfile` is built unchanged, with `BASE_IMAGE` pointing at a local base,
`localhost/python:3.11-slim`: Debian bookworm's python3 (3.11) made by mmdebstrap from Debian's
packages. The base is a tarball keyed by a hash of its recipe (suite, mirror, packages, options) and
cached in /var/cache/cosmos-s3-export, so it is made once per recipe, not per run. The official
python:3.11-slim pinned in the Dockerfile comes from Docker Hub, which this project's machines cannot
reach; the local base is what the test can build on, and it differs (Debian's Python 3.11.2 under
/usr/bin instead of a CPython build under /usr/local).

What this host needs (found when the image was first built here): `--isolation chroot` for builds,
`--runtime runc` and explicit ulimits for runs, the host's CA bundle mounted read-only into the RUN
steps (pip inside the build must trust the same certificate authorities as the host; the bundle is not
baked into the image), and `--network host` (podman's default network rewrites the host's firewall).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("COSMOS_EXPORT_IMAGE_CACHE", "/var/cache/cosmos-s3-export"))
BASE_TAG = "localhost/python:3.11-slim"
IMAGE = "localhost/cosmos-export"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Debian package -> what it provides here (catatonit: podman's --init, the task's initProcessEnabled).
TOOLS = {
    "buildah": "buildah",
    "podman": "podman",
    "mmdebstrap": "mmdebstrap",
    "runc": "runc",
    "catatonit": "/usr/libexec/podman/catatonit",
}
#: The base image's recipe; any change makes a new base (its hash names the cached tarball).
BASE_RECIPE: dict[str, Any] = {
    "suite": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    "variant": "minbase",
    # python3 is 3.11 in bookworm; python-is-python3 gives the `python` the Dockerfile calls; the venv's pip
    # is Debian's wheel, which trusts /etc/ssl/certs/ca-certificates.crt.
    "include": ["python3", "python3-venv", "python-is-python3", "ca-certificates"],
    "dpkgopt": ["path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*"],
    "source_date_epoch": 1735689600,  # 2025-01-01: fixed file times, so a rebuild from the same packages matches
}
LABEL = "org.cosmos-s3-export.base-recipe"


class ImageUnavailable(RuntimeError):
    """The image cannot be built here, and why (not root, no apt, a missing package)."""


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, text=True, **kwargs)


#: What building for another architecture adds: QEMU user emulation (binfmt) and mmdebstrap's arch check.
FOREIGN_TOOLS = {"qemu-user-static": "qemu-aarch64-static", "arch-test": "arch-test"}


def missing_tools(foreign: bool = False) -> list[str]:
    tools = {**TOOLS, **(FOREIGN_TOOLS if foreign else {})}
    return [package for package, command in tools.items() if shutil.which(command) is None]  # which() takes paths


def ensure_tools(foreign: bool = False) -> None:
    """Install the missing build tools from Debian's packages (root only); raise ImageUnavailable why not."""
    missing = missing_tools(foreign)
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageUnavailable(f"{', '.join(missing)} not installed and not root: cannot apt-get install them")
    if shutil.which("apt-get") is None:
        raise ImageUnavailable(f"{', '.join(missing)} not installed and no apt-get on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"==> apt-get install {' '.join(missing)} (the image test builds the worker image with them)", flush=True)
    try:
        _run(["apt-get", "update", "-q"], env=env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    except subprocess.CalledProcessError as e:
        raise ImageUnavailable(f"apt-get install {' '.join(missing)} failed with exit code {e.returncode}") from None
    if missing_tools(foreign):
        raise ImageUnavailable(f"still missing after apt-get install: {', '.join(missing_tools(foreign))}")


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def recipe_hash(arch: str) -> str:
    return hashlib.sha256(json.dumps({**BASE_RECIPE, "arch": arch}, sort_keys=True).encode()).hexdigest()[:16]


def base_tag(arch: str) -> str:
    return BASE_TAG if arch == host_arch() else f"{BASE_TAG}-{arch}"


def _image_label(image: str, label: str) -> str | None:
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', image],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_base(arch: str) -> str:
    """`localhost/python:3.11-slim` (per arch) from the cached tarball of its recipe; made when absent."""
    digest, tag = recipe_hash(arch), base_tag(arch)
    if _image_label(tag, LABEL) == digest:
        return tag
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"base-{BASE_RECIPE['suite']}-{arch}-{digest}.tar"
    if not tarball.exists():
        print(f"==> mmdebstrap {BASE_RECIPE['suite']} {arch} -> {tarball} (once per recipe)", flush=True)
        partial = tarball.with_name(tarball.stem + ".partial.tar")  # mmdebstrap picks the format by suffix
        _run(
            [
                "mmdebstrap",
                f"--variant={BASE_RECIPE['variant']}",
                f"--arch={arch}",
                f"--include={','.join(BASE_RECIPE['include'])}",
                *[f"--dpkgopt={o}" for o in BASE_RECIPE["dpkgopt"]],
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                BASE_RECIPE["suite"],
                str(partial),
                BASE_RECIPE["mirror"],
            ],
            env={**os.environ, "SOURCE_DATE_EPOCH": str(BASE_RECIPE["source_date_epoch"])},
        )
        partial.replace(tarball)
    _run(
        [
            "podman",
            "import",
            "--quiet",
            f"--arch={arch}",
            "--change",
            f"LABEL {LABEL}={digest}",
            "--change",
            'CMD ["python3"]',
            str(tarball),
            tag,
        ],
        stdout=subprocess.DEVNULL,
    )
    return tag


@dataclass(frozen=True)
class Built:
    image: str
    arch: str
    seconds: float
    size_bytes: int


def build(arch: str | None = None) -> Built:
    """Build runtime/Dockerfile for `arch` (default: this host's) on the local base; time and size."""
    arch = arch or host_arch()
    ensure_tools(foreign=arch != host_arch())
    base = ensure_base(arch)
    image = f"{IMAGE}:{arch}"
    started = time.monotonic()
    _run(
        [
            "buildah",
            "build",
            "--quiet",
            "--isolation",
            "chroot",
            "--layers",
            f"--platform=linux/{arch}",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--volume",
            f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
            "--tag",
            image,
            str(REPO / "runtime"),
        ],
        stdout=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    size = int(_run(["podman", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True).stdout)
    return Built(image, arch, seconds, size)


def run_argv(
    image: str,
    container: dict,
    *,
    command: list[str] | None = None,
    env_file: Path | None = None,
    mounts: tuple[tuple[Path, str], ...] = (),
) -> list[str]:
    """`podman run` with the task definition's container settings (`containerDefinitions[0]`)."""
    argv = ["podman", "run", "--rm", "--network", "host", "--runtime", "runc"]
    argv += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
    if container.get("readonlyRootFilesystem"):
        argv.append("--read-only")
    for mount in container.get("mountPoints", []):
        if mount.get("containerPath") == "/tmp":  # the task's ephemeral volume: a tmpfs here
            argv += ["--tmpfs", "/tmp:rw,nosuid,nodev"]
    if container.get("user"):
        argv += ["--user", container["user"]]
    linux = container.get("linuxParameters", {})
    if linux.get("initProcessEnabled"):
        argv.append("--init")
    for cap in linux.get("capabilities", {}).get("drop", []):
        argv += ["--cap-drop", cap]
    if container.get("entryPoint"):
        argv += ["--entrypoint", json.dumps(container["entryPoint"])]
    for host, inside in mounts:
        argv += ["--volume", f"{host}:{inside}:ro"]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    return argv + [image, *(command if command is not None else container.get("command", []))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["tools", "build"])
    parser.add_argument("--arch", default=None, help="amd64 or arm64 (default: this host's)")
    args = parser.parse_args()
    try:
        if args.what == "tools":
            ensure_tools()
            print(f"{', '.join(TOOLS)} are installed")
            return 0
        built = build(args.arch)
    except ImageUnavailable as e:
        print(f"cannot build the image here: {e}", file=sys.stderr)
        return 1
    print(f"{built.image}: linux/{built.arch}, {built.size_bytes / 1e6:.0f} MB, built in {built.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
