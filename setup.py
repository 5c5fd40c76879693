"""Build of voipgw: the metadata is in pyproject.toml; this file only adds the compiled core.

The sans-IO SIP core (``gateway/sip``) and the B2BUA (``gateway/b2bua``) are compiled to
C extensions with mypyc, the compiler that builds mypy and black from their own typed
Python. It is the same source, type-checked with ``mypy --strict``; nothing is
hand-written in C. Why: every message of every call passes through these modules, and
interpreted they cost the event-loop thread about 0.7 ms of CPU per basic call, the
limit of the gateway's call rate on one core (``python -m tests.bench.bench_core``
prints the figure; ``make bench`` prints which build it measured).

The build is optional, as markupsafe's speedups are: without a C compiler or the
Python headers, or with ``VOIPGW_PURE_PYTHON=1``, voipgw installs interpreted and works
the same, only slower. ``voipgw run`` logs which one it is.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
#: The packages compiled: the per-message hot path. Everything else (asyncio
#: adapters, routing, CDR) stays interpreted: it runs once per call or less.
NATIVE_PACKAGES = ("gateway/sip", "gateway/b2bua")


def native_sources() -> list[str]:
    return sorted(
        str(path.relative_to(ROOT))
        for package in NATIVE_PACKAGES
        for path in (ROOT / package).glob("*.py")
    )


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the interpreted package when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            # Any failure means interpreted, all of it: a module built without the
            # shared group library would fail to import.
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            _warn_interpreted(exc)
            return
        # An extension whose generated C did not change is not rebuilt and keeps its
        # old time; it is nevertheless the build of the current source, and
        # gateway.native judges staleness by comparing those times.
        for ext in self.extensions:
            Path(self.get_ext_fullpath(ext.name)).touch()


def _warn_interpreted(exc: BaseException) -> None:
    sys.stderr.write(
        f"\nvoipgw: the compiled SIP core could not be built ({exc}); installing the "
        "interpreted package, which works the same but costs more CPU per call. "
        "Install a C compiler and the Python headers (Debian: gcc python3-dev) for it.\n\n"
    )


def remove_inplace_extensions() -> None:
    """Deletes extensions an earlier in-place build left beside the sources: an
    interpreted build must not keep importing them (an extension wins over its .py)."""
    for package in NATIVE_PACKAGES:
        for suffix in EXTENSION_SUFFIXES:
            for path in (ROOT / package).glob(f"*{suffix}"):
                path.unlink()


def ext_modules() -> list[object]:
    if os.environ.get("VOIPGW_PURE_PYTHON") == "1":
        remove_inplace_extensions()
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _warn_interpreted(exc)
        return []
    return mypycify(native_sources(), opt_level="3", group_name="voipgw_core")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
