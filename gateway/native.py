"""Which build of the SIP core is running: compiled by mypyc (see setup.py) or interpreted.

setup.py compiles its packages in place next to their sources (``pip install -e .``
or ``make native``), and an extension module is imported in preference
to its ``.py``. A source edited after the build would therefore not be what runs:
:func:`stale_extensions` names such modules so that the test suite refuses to test
an old build and ``voipgw run`` warns.

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
from pathlib import Path
from typing import Final

_ROOT: Final = Path(__file__).resolve().parent.parent


def _extension_of(source: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def core_build() -> str:
    """ "compiled" when the SIP parser runs as a mypyc extension, else "interpreted"."""
    from gateway.sip import parser

    origin = getattr(parser, "__file__", "") or ""
    return "interpreted" if origin.endswith(".py") else "compiled"


def stale_extensions(root: Path = _ROOT) -> list[str]:
    """Modules whose source is newer than their compiled extension (rebuild them:
    ``make native`` or ``pip install -e .``); ``root`` is the tree holding ``gateway``."""
    # Every source is looked at, not a list of the compiled packages: setup.py alone
    # says what is compiled, and an extension beside a source is what matters.
    stale = []
    for source in sorted(root.joinpath("gateway").rglob("*.py")):
        extension = _extension_of(source)
        if extension is not None and source.stat().st_mtime > extension.stat().st_mtime:
            stale.append(".".join(source.relative_to(root).with_suffix("").parts))
    return stale
