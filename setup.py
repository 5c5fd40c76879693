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
import types
from concurrent.futures import ThreadPoolExecutor
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
#: The packages compiled: the per-message hot path. Everything else (asyncio
#: adapters, routing, CDR) stays interpreted: it runs once per call or less.
NATIVE_PACKAGES = ("gateway/sip", "gateway/b2bua")
#: Single modules of the asyncio adapters that run per message and import only the
#: standard library and the packages above (the build type-checks what they import,
#: and may run before the other dependencies are installed: Makefile).
NATIVE_MODULES = (
    "gateway/ops/sip_traffic.py",
    "gateway/service/pump.py",
    "gateway/transport/manager.py",
)


def native_sources() -> list[str]:
    packages = [
        str(path.relative_to(ROOT))
        for package in NATIVE_PACKAGES
        for path in (ROOT / package).glob("*.py")
    ]
    return sorted([*packages, *NATIVE_MODULES])


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the interpreted package when compiling fails, and
    compiles the C files of one extension in parallel."""

    def build_extensions(self) -> None:
        self.compiler.compile = types.MethodType(_compile_in_parallel, self.compiler)
        super().build_extensions()

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
        # gateway.ops.native judges staleness by comparing those times.
        for ext in self.extensions:
            Path(self.get_ext_fullpath(ext.name)).touch()


def _compile_in_parallel(
    compiler: Any,
    sources: list[str],
    output_dir: str | None = None,
    macros: Any = None,
    include_dirs: list[str] | None = None,
    debug: bool = False,
    extra_preargs: list[str] | None = None,
    extra_postargs: list[str] | None = None,
    depends: list[str] | None = None,
) -> list[str]:
    """``CCompiler.compile`` with one compiler process per CPU instead of one at a time.

    Written here because setuptools has no such option: its ``--parallel`` spreads
    whole extensions over processes, and the shared library mypyc builds is one
    extension of many C files (``multi_file``), most of the build's time. The steps
    are CCompiler.compile's own (``_setup_compile``, ``_get_cc_args``, ``_compile``
    per object), as numpy.distutils' parallel compile does it; each ``_compile`` runs
    gcc in a subprocess, so threads give the parallelism.
    """
    macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs
    )
    cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

    def compile_one(obj: str) -> None:
        source, ext = build[obj]
        compiler._compile(obj, source, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(compile_one, [obj for obj in objects if obj in build]))
    return list(objects)


def _warn_interpreted(exc: BaseException) -> None:
    sys.stderr.write(
        f"\nvoipgw: the compiled SIP core could not be built ({exc}); installing the "
        "interpreted package, which works the same but costs more CPU per call. "
        "Install a C compiler and the Python headers (Debian: gcc python3-dev) for it.\n\n"
    )


def remove_inplace_extensions() -> None:
    """Deletes extensions an earlier in-place build left beside the sources: an
    interpreted build must not keep importing them (an extension wins over its .py)."""
    for suffix in EXTENSION_SUFFIXES:
        for package in NATIVE_PACKAGES:
            for path in (ROOT / package).glob(f"*{suffix}"):
                path.unlink()
        for module in NATIVE_MODULES:
            (ROOT / module).with_suffix(suffix).unlink(missing_ok=True)


def ext_modules() -> list[object]:
    if os.environ.get("VOIPGW_PURE_PYTHON") == "1":
        remove_inplace_extensions()
        return []
    if os.environ.get("VOIPGW_DEFER_NATIVE") == "1":
        # The Makefile's editable install: `make native` compiles in place, at the
        # same time as this install fetches the dependencies; nothing to do here.
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _warn_interpreted(exc)
        return []
    # multi_file: one C file per module instead of one 10 MB file, so the build uses
    # every CPU (_compile_in_parallel): 28 s instead of 47-51 s on 2 cores, for the
    # same code (callgrind: 1.2118e9 against 1.2097e9 instructions for 400 calls of
    # tests.bench.bench_core, +0.17 %, start-up included).
    return mypycify(native_sources(), opt_level="3", group_name="voipgw_core", multi_file=True)


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
