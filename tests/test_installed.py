"""voipgw as users meet it: the installed command, outside the checkout.

The suite once passed while ``make run`` and even ``voipgw --help`` failed on every
fresh clone: pytest and ``python -m gateway`` ran from the repository root, where the
compiled core's shared library lay on the path by accident. These tests run the
installed console script from directories that are not the checkout:

* ``voipgw --help`` and ``check-config`` from ``/``, in the venv ``make`` built;
* the demo configuration, unchanged, started as ``make run`` starts it (the console
  script, ``--config deploy/demo/voipgw.toml`` from a directory holding ``deploy/demo``),
  answering SIP OPTIONS over UDP and TCP, IPv4 and IPv6, and /readyz;
* a wheel built from the checkout and installed into a new venv, running compiled.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops.native import stale_extensions
from tests.ops.harness import remove_state, state_directory, voipgw_command

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "deploy" / "demo"
#: Subcommands README's command list names; --help must list every one.
SUBCOMMANDS = ("run", "check-config", "db", "cdr", "sites", "users", "status")
#: Seconds the demo may take to get ready (initdb on the first start).
READY_TIMEOUT = 90.0


def run_voipgw(*args: str, cwd: str | Path = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [voipgw_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_works_from_the_root_directory() -> None:
    result = run_voipgw("--help")
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert f"    {name}" in result.stdout, (name, result.stdout)


def test_check_config_works_from_the_root_directory() -> None:
    result = run_voipgw("check-config", "--config", str(DEMO_DIR / "voipgw.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def expected_build() -> str:
    """The build the checkout's install runs: compiled, unless built or asked for
    interpreted, or edited since the build (gateway/ops/native.py)."""
    if os.environ.get("VOIPGW_PURE_PYTHON") == "1" or stale_extensions():
        return "interpreted"
    return "compiled"


def test_the_installed_command_runs_the_compiled_core_unless_built_interpreted() -> None:
    expected = expected_build()
    probe = subprocess.run(
        [sys.executable, "-c", "from gateway.ops.native import core_build; print(core_build())"],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.strip() == expected, probe.stderr


def options(transport: str, host: str, port: int = 5060) -> bytes:
    """Sends one OPTIONS and returns the first response."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(5)
        sock.bind((host, 0))
        local_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        request = (
            f"OPTIONS sip:{shown}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {shown}:{local_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{shown}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{shown}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4()}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        if kind == socket.SOCK_DGRAM:
            sock.sendto(request, (host, port))
            return sock.recv(65535)
        sock.connect((host, port))
        sock.sendall(request)
        return sock.recv(65535)


@pytest.fixture
def demo_copy() -> Iterator[Path]:
    """A directory laid out as the checkout is for ``make run``: deploy/demo/* only."""
    where = state_directory()
    shutil.copytree(DEMO_DIR, where / "deploy" / "demo")
    try:
        yield where
    finally:
        remove_state(where / "state")
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.interop
def test_the_demo_config_answers_options_as_make_run_starts_it(demo_copy: Path) -> None:
    log = demo_copy / "voipgw.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [voipgw_command(), "run", "--config", "deploy/demo/voipgw.toml"],
            cwd=demo_copy,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        while b"voipgw ready" not in log.read_bytes():
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() - started < READY_TIMEOUT, log.read_text(errors="replace")
            time.sleep(0.1)
        for transport in ("UDP", "TCP"):
            for host in ("127.0.0.1", "::1"):
                answer = options(transport, host)
                assert answer.startswith(b"SIP/2.0 200 "), (transport, host, answer[:200])
        with urllib.request.urlopen("http://127.0.0.1:9464/readyz", timeout=5) as response:
            assert response.status == 200
        text = log.read_text(errors="replace")
        # Not a TTY: JSON lines only, and none of the embedded PostgreSQL's chatter.
        assert all(line.startswith("{") for line in text.splitlines()), text[:2000]
        assert "initdb" not in text and "Running commandline" not in text, text[:2000]
        assert f'"SIP core: {expected_build()}' in text, text[:2000]
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]


def test_a_wheel_installed_into_a_new_venv_runs_compiled() -> None:
    """``pip install`` of a wheel built from the checkout, into a new venv: the compiled
    core is in the wheel, and the command works from ``/``.

    The suite runs without a network (deploy/loopback-only.sh), so the wheel is built
    with this venv's setuptools and mypyc (``--no-build-isolation``) and the new venv
    reaches its third-party dependencies through a ``.pth`` naming this venv's
    site-packages: path entries added that way have their own ``.pth`` files ignored,
    so the checkout's editable-install hook does not follow, and only the wheel's
    ``gateway`` can be imported.
    """
    work = Path(tempfile.mkdtemp(prefix="voipgw-wheel-"))
    try:
        source = work / "src"
        # A clean copy of the tracked files: no in-place extensions, no .venv.
        tracked = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
        for name in filter(None, tracked):
            target = source / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / os.fsdecode(name), target)
        build = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(work / "dist"),
                str(source),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert build.returncode == 0, build.stderr[-4000:]
        (wheel,) = (work / "dist").glob("voipgw-*.whl")
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                str(wheel),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert install.returncode == 0, install.stderr[-4000:]
        (site,) = (venv / "lib").glob("python3*/site-packages")
        assert list(site.glob("voipgw_core__mypyc*")), "the wheel carries no compiled core"
        ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
        (site / "voipgw-test-deps.pth").write_text(ours + "\n")
        help_run = subprocess.run(
            [str(venv / "bin" / "voipgw"), "--help"], cwd="/", capture_output=True, text=True
        )
        assert help_run.returncode == 0, help_run.stderr
        probe = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import gateway, gateway.ops.native as n; print(gateway.__file__, n.core_build())",
            ],
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
        )
        origin, build_kind = probe.stdout.split()
        assert origin.startswith(str(site)), probe.stdout
        assert build_kind == "compiled", probe.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
