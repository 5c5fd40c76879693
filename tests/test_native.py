"""The compiled SIP core (setup.py, mypyc): built, in use, and judged stale.

In CI conftest.py requires it compiled and current before any test runs; elsewhere a
source edited since the build runs interpreted (test_native_build.py).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from gateway.ops import native


def test_the_core_runs_compiled_unless_interpreted_on_purpose_or_edited() -> None:
    # make test builds it (the native rule); CI installs gcc and python3-dev for it.
    # Only VOIPGW_PURE_PYTHON=1 or an edit since the build may run the suite interpreted.
    interpreted = os.environ.get("VOIPGW_PURE_PYTHON") == "1" or native.stale_extensions()
    assert native.core_build() == ("interpreted" if interpreted else "compiled")


def test_a_source_newer_than_its_extension_is_stale(tmp_path: Path) -> None:
    package = tmp_path / "gateway" / "sip"
    package.mkdir(parents=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in ("parser", "uri", "headers"):
        (package / f"{name}.py").write_text("")
        (package / f"{name}{suffix}").write_bytes(b"")
        os.utime(package / f"{name}.py", (1000, 1000))
        os.utime(package / f"{name}{suffix}", (2000, 2000))
    (package / "dialog.py").write_text("")  # interpreted only: never stale
    assert native.stale_extensions(tmp_path) == []

    os.utime(package / "uri.py", (3000, 3000))  # edited after the build
    assert native.stale_extensions(tmp_path) == ["gateway.sip.uri"]
