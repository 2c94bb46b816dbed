"""The container image answers a call: built on a debootstrapped bookworm with podman, served by chroot.

Containers cannot be *run* on the build machine (crun cannot set
RLIMIT_NOFILE there) and no registry is reachable, so the test makes its own
base and runs the image's root directly:

1. ``debootstrap --variant=minbase bookworm`` from the configured Debian
   mirror (``AYBIZA_DEBIAN_MIRROR``, else the first ``URIs:`` of
   ``/etc/apt/sources.list.d/debian.sources``), imported with ``podman import``;
2. ``podman build --isolation chroot --build-arg BASE=<that image>`` of our
   ``Containerfile``;
3. ``podman image mount``, a tmpfs on the data volume, ``/proc`` and ``/dev``
   inside, and ``aybiza serve`` started by ``chroot --userspec=aybiza`` with
   the image's own environment (its ``ENV``), on a loopback port;
4. a Twilio-like call to it: the greeting is heard, the call ends cleanly.

It runs under ``make test-image`` (``AYBIZA_TEST_IMAGE=1``), which installs
podman and debootstrap through ``scripts/install-system.sh``; it needs root.
Elsewhere, or without them, it skips, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aybiza.testing.caller import Wait, place_call
from aybiza.testing.processes import free_port, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AUTH_TOKEN = "image-test-auth-token"


def _missing() -> str | None:
    if os.environ.get("AYBIZA_TEST_IMAGE") != "1":
        return "the image test builds a Debian base and the image (slow): run it with make test-image"
    if os.geteuid() != 0:
        return "the image test needs root (debootstrap, podman --isolation chroot, chroot)"
    absent = [tool for tool in ("podman", "debootstrap", "chroot") if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not installed (make test-image installs them)"
    return None


def _mirror() -> str:
    configured = os.environ.get("AYBIZA_DEBIAN_MIRROR")
    if configured:
        return configured
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _run(*command: str, timeout: float = 3600) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command[:4])} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    tag = uuid.uuid4().hex[:8]
    base, built = f"localhost/aybiza-test-bookworm:{tag}", f"localhost/aybiza-test:{tag}"
    root = tmp_path_factory.mktemp("bookworm")
    try:
        _run("debootstrap", "--variant=minbase", "bookworm", str(root), _mirror())
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", base], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
        shutil.rmtree(root, ignore_errors=True)
        # The host's CA bundle for pip inside the build: this machine reaches PyPI through a TLS proxy.
        bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
        _run("podman", "build", "--isolation", "chroot", "--build-arg", f"BASE={base}",
             "-v", f"{bundle}:/run/build-ca.crt:ro", "--build-arg", "PIP_CERT=/run/build-ca.crt",
             "-t", built, "-f", str(ROOT / "Containerfile"), str(ROOT))
        yield built
    finally:
        subprocess.run(["podman", "rmi", "-f", built, base], capture_output=True)


def _image_env(image: str) -> dict[str, str]:
    config = json.loads(_run("podman", "image", "inspect", image))[0]["Config"]
    return dict(item.split("=", 1) for item in config.get("Env", []))


@pytest.fixture(scope="module")
def mounted(image: str) -> Iterator[Path]:
    root = Path(_run("podman", "image", "mount", image).strip())
    mounts: list[Path] = []
    try:
        for target, args in ((root / "var/lib/aybiza", ["-t", "tmpfs", "-o", "mode=0700", "tmpfs"]),
                             (root / "proc", ["-t", "proc", "proc"]), (root / "dev", ["--bind", "/dev"])):
            subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
            mounts.append(target)
        uid = _run("chroot", str(root), "id", "-u", "aybiza").strip()
        os.chown(root / "var/lib/aybiza", int(uid), int(uid))
        yield root
    finally:
        for target in reversed(mounts):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        subprocess.run(["podman", "image", "unmount", image], capture_output=True)


@pytest.mark.anyio
async def test_the_image_answers_a_call_served_by_chroot(image: str, mounted: Path,
                                                         tmp_path: Path) -> None:
    env = _image_env(image)
    assert env["AYBIZA_HOST"] == "0.0.0.0" and "/opt/aybiza/.venv/bin" in env["PATH"]
    port = free_port()
    env.update(AYBIZA_HOST="127.0.0.1", AYBIZA_PORT=str(port), TWILIO_AUTH_TOKEN=AUTH_TOKEN,
               AYBIZA_PUBLIC_URL=f"http://127.0.0.1:{port}", HOME="/var/lib/aybiza")
    command = ["chroot", "--userspec=aybiza:aybiza", str(mounted), "/opt/aybiza/.venv/bin/aybiza", "serve"]
    with serving(command, health_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "server.log",
                 env=env, cwd=Path("/"), what="aybiza in the image", timeout_s=180):
        report = await place_call(f"ws://127.0.0.1:{port}/twilio/stream", [Wait(8)], auth_token=AUTH_TOKEN)
    assert report.received_bytes > 8000, "the greeting was heard"
    assert report.close_code == 1000
