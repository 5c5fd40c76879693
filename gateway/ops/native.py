"""Which build of the SIP core is running: compiled by mypyc (see setup.py) or interpreted.

setup.py compiles its packages in place next to their sources (``pip install -e .``
or ``make native``), and Python imports an extension module in preference to its
``.py``. So that a fresh clone, an edit and ``pytest`` need no tribal knowledge, the
compiled build gets out of the way of an edit: when a source is newer than its
extension (:func:`stale_extensions`), or ``VOIPGW_PURE_PYTHON=1`` is set,
:func:`choose_core_build` (run by ``gateway/__init__.py`` before anything below it is
imported) has every compiled package imported from its sources. All or nothing:
compiled modules call one another natively through the shared library
(``voipgw_core__mypyc``), which holds the code of the whole group as it was built, so
an edited module interpreted beside compiled ones would still have its old code run
by its compiled callers. The price, when ``gateway`` is imported: a walk of its 9
directories and a stat of each of the 24 compiled modules and its source, 0.7 ms
(1.5 ms with a cold page cache). Development therefore runs interpreted after an
edit, and compiled again after ``make native``; ``make test``, ``make bench`` and CI
build first, so they measure the compiled build, and in CI the test session stops
when it would not (:func:`compiled_build_required`). :func:`describe_core_build` says
which build runs and why; pytest prints it in its header.

Value classes on the per-message path (Endpoint, TransactionKey, SipUri, Via, Request,
the events ...) are dataclasses with ``init=False`` and an ``__init__`` written out.
mypyc compiles a class's own methods but leaves the ones ``dataclass()`` generates at
import time interpreted, and a frozen dataclass's generated ``__init__`` sets each
field through ``object.__setattr__``: 1.06 us for a four-field key against 0.045 us
compiled. Immutability is kept for the type checker instead: the fields of the
formerly frozen classes are ``Final`` (mypy rejects any assignment outside
``__init__``), and ``unsafe_hash=True`` gives them the hash ``frozen`` gave.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

#: The tree holding ``gateway`` (this file is gateway/ops/native.py).
_ROOT: Final = Path(__file__).resolve().parents[2]
#: How many stale modules :func:`describe_core_build` names before "...".
_NAMED_STALE: Final = 3

#: Why the compiled packages are imported from their sources although they are
#: built; None while they are not (set once, by :func:`choose_core_build`).
_interpreted_because: str | None = None


def core_build() -> str:
    """ "compiled" when the SIP parser runs as a mypyc extension, else "interpreted"."""
    from gateway.sip import parser

    origin = getattr(parser, "__file__", "") or ""
    return "interpreted" if origin.endswith(".py") else "compiled"


def describe_core_build() -> str:
    """The build for people, with the reason when it is interpreted: "compiled", or
    "interpreted (sources edited since the build: gateway.sip.uri; run `make native`)"."""
    if core_build() == "compiled":
        return "compiled"
    reason = _interpreted_because or "not built: `make native` builds it, with gcc and python3-dev"
    return f"interpreted ({reason})"


def compiled_build_required(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the tests must run the compiled core, current: in CI (``CI=true``,
    which the common CI services set), so that CI measures the build the wheel ships,
    and wherever ``VOIPGW_REQUIRE_COMPILED=1``. An explicit ``VOIPGW_PURE_PYTHON=1``
    exempts CI (a job testing the interpreted build on purpose), not the latter."""
    if environ.get("VOIPGW_REQUIRE_COMPILED") == "1":
        return True
    return environ.get("CI") == "true" and environ.get("VOIPGW_PURE_PYTHON") != "1"


def _compiled_beside_sources(root: Path) -> dict[Path, list[tuple[Path, Path]]]:
    """Each directory under ``root/gateway`` holding extensions, with its
    (source, extension) pairs. setup.py alone says what is compiled: this looks at
    every source beside an extension rather than at a copy of its package list."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    found: dict[Path, list[tuple[Path, Path]]] = {}
    for directory, subdirectories, names in os.walk(root / "gateway"):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        present = set(names)
        pairs = [
            (Path(directory, name), Path(directory, name[:-3] + suffix))
            for name in sorted(names)
            if name.endswith(".py")
            for suffix in suffixes
            if name[:-3] + suffix in present
        ]
        if pairs:
            found[Path(directory)] = pairs
    return found


def stale_extensions(root: Path = _ROOT) -> list[str]:
    """Modules whose source is newer than their compiled extension (rebuild them:
    ``make native`` or ``pip install -e .``); ``root`` is the tree holding ``gateway``."""
    return _stale(root, _compiled_beside_sources(root))


def _stale(root: Path, compiled: dict[Path, list[tuple[Path, Path]]]) -> list[str]:
    return [
        ".".join(source.relative_to(root).with_suffix("").parts)
        for pairs in compiled.values()
        for source, extension in pairs
        if source.stat().st_mtime > extension.stat().st_mtime
    ]


def choose_core_build(root: Path = _ROOT) -> bool:
    """Picks the build of the compiled packages before any of them is imported: True
    to import the extensions, False when they are imported from their sources (a
    :class:`CompiledPackagesFromSource` finder then goes first on ``sys.meta_path``),
    and the shared library must not be loaded.

    Staleness is judged in a source checkout only (``setup.py`` beside ``gateway``):
    pip writes an installed package's files with the time of the install, in the
    wheel's order (``parser.cpython-...so`` before ``parser.py``), so there every source
    is a little newer than its extension without having been edited.
    """
    global _interpreted_because
    compiled = _compiled_beside_sources(root)
    if os.environ.get("VOIPGW_PURE_PYTHON") == "1":
        reason = "VOIPGW_PURE_PYTHON=1"
    elif compiled and (root / "setup.py").is_file() and (stale := _stale(root, compiled)):
        named = ", ".join(stale[:_NAMED_STALE]) + (", ..." if len(stale) > _NAMED_STALE else "")
        reason = f"sources edited since the build: {named}; run `make native`"
    else:
        return True
    _interpreted_because = reason
    if compiled:
        packages = tuple(".".join(path.relative_to(root).parts) for path in compiled)
        sys.meta_path.insert(0, CompiledPackagesFromSource(root, packages))
    return False


class CompiledPackagesFromSource:
    """Imports the modules of ``packages`` (and their subpackages) from their ``.py``
    files with :class:`~importlib.machinery.SourceFileLoader`, ahead of the path
    finder, which would pick the extension beside each source.

    A meta path finder by its ``find_spec`` alone: ``importlib.abc`` would add 7 ms of
    imports (``importlib.resources``) to every start."""

    def __init__(self, root: Path, packages: tuple[str, ...]) -> None:
        self.root = root
        self.packages = packages

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not any(fullname == p or fullname.startswith(p + ".") for p in self.packages):
            return None
        base = self.root.joinpath(*fullname.split("."))
        init = base / "__init__.py"
        if init.is_file():
            return importlib.util.spec_from_file_location(
                fullname,
                init,
                loader=importlib.machinery.SourceFileLoader(fullname, str(init)),
                submodule_search_locations=[str(base)],
            )
        source = base.with_name(base.name + ".py")
        if source.is_file():
            return importlib.util.spec_from_file_location(
                fullname, source, loader=importlib.machinery.SourceFileLoader(fullname, str(source))
            )
        return None
