"""The registrar: digest authentication, bindings in PostgreSQL, REGISTER handling.

* :mod:`.digest`: RFC 7616/8760 Digest (SHA-256, MD5), stateless HMAC nonces, pure.
* :mod:`.bindings`: RFC 3261 10.3 as pure functions (parse, plan, format).
* :mod:`.store`: the asyncpg store of credentials and bindings.
* :mod:`.service`: :class:`Registrar`, whose ``handle`` is the gateway's REGISTER hook.
* :mod:`.routing`: bindings to B-leg routes.
* :mod:`.path`: RFC 3327 Path: registrations through an edge proxy, calls through it.
* :mod:`.config`: ``[registrar]``.
"""

from __future__ import annotations

from gateway.registrar.bindings import Binding, canonical_aor
from gateway.registrar.config import RegistrarConfig
from gateway.registrar.digest import Algorithm, compute_ha1
from gateway.registrar.routing import best_binding, binding_target, route_to_binding
from gateway.registrar.service import Registrar
from gateway.registrar.store import BindingStore

__all__ = [
    "Algorithm",
    "Binding",
    "BindingStore",
    "Registrar",
    "RegistrarConfig",
    "best_binding",
    "binding_target",
    "canonical_aor",
    "compute_ha1",
    "route_to_binding",
]
