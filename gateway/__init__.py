"""voipgw: the SIP call-handling and emergency-routing gateway.

This module only picks the build of the SIP core and makes the compiled one
importable however voipgw was installed.

First, before anything below ``gateway`` is imported, :func:`gateway.ops.native.choose_core_build`
decides between the compiled core and its sources: a source edited since the
in-place build (or ``VOIPGW_PURE_PYTHON=1``) has the whole compiled group imported
from source, so that an edit is what runs (gateway/ops/native.py says why all of it).

mypyc (setup.py) builds the shared library of the compiled modules as a *top-level*
module, ``voipgw_core__mypyc``, and every compiled module's shim imports it by that
name. A wheel puts it beside ``gateway/`` in site-packages, on ``sys.path``. An
in-place build (``make native``, or ``setup.py build_ext --inplace`` after a
``pip install -e``) leaves it at the root of the checkout, which the editable
install's finder does not cover (it maps only the packages), so the installed
``voipgw`` command failed outside the checkout. Loading it from beside this package
when the normal import cannot find it fixes every install mode without a ``.pth``
hack. A group name inside the package (``gateway.voipgw_core``) is no way out: mypyc
derives each compiled module's ``__file__`` and ``__path__`` from the shared
library's directory, assuming it is the tree's root.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from gateway.ops import native

#: The module name mypyc gives the shared library (``group_name`` in setup.py).
CORE_LIBRARY = "voipgw_core__mypyc"


def _load_core_library_beside_package() -> None:
    if CORE_LIBRARY in sys.modules or importlib.util.find_spec(CORE_LIBRARY) is not None:
        return
    root = Path(__file__).resolve().parent.parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = root / f"{CORE_LIBRARY}{suffix}"
        if not path.exists():
            continue
        spec = importlib.util.spec_from_file_location(CORE_LIBRARY, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a file that exists
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[CORE_LIBRARY] = module
        spec.loader.exec_module(module)
        return


if native.choose_core_build():
    _load_core_library_beside_package()
