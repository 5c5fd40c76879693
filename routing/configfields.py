"""Typed reading of TOML config tables, with errors that name the bad field.

Every config section of the project (gateway, cdr, routing, media, metrics) reads its
TOML table through these helpers, so a bad file always fails the same way: a
:class:`ConfigError` whose text starts with the dotted path of the field, e.g.
``sip.listen[1].port: expected an integer 1-65535, got 'abc'``.

It lives in :mod:`routing`, the pure base layer that :mod:`cdr` and :mod:`gateway`
both build on, so the CDR tools (``voipgw cdr ...``, exports) read their config
with no dependency on the SIP gateway's packages.

This module is a leaf (it imports nothing from the project) so that every package
can use it without import cycles.
"""

from __future__ import annotations

import builtins
import ipaddress
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range.

    Attributes:
        field: dotted path of the offending field ("cdr.batch_size").
        problem: what is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Table:
    """A view of one TOML table that knows its dotted path and rejects unknown keys.

    Args:
        data: the parsed table.
        path: dotted path of the table in the file ("" for the top level).
    """

    def __init__(self, data: Mapping[str, Any], path: builtins.str = "") -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path or "<top>", f"expected a table, got {_show(data)}")
        self.data = data
        self.path = path
        self._used: set[str] = set()

    def field(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: builtins.str, default: Any, required: bool) -> Any:
        self._used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(self.field(key), "required field is missing")
            return default
        return self.data[key]

    def str(
        self,
        key: builtins.str,
        default: builtins.str | None = None,
        *,
        required: builtins.bool = False,
    ) -> builtins.str:
        value = self._get(key, default, required)
        if not isinstance(value, str):
            raise ConfigError(self.field(key), f"expected a string, got {_show(value)}")
        return value

    def opt_str(self, key: builtins.str) -> builtins.str | None:
        value = self._get(key, None, False)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(self.field(key), f"expected a string, got {_show(value)}")
        return value

    def bool(self, key: builtins.str, default: bool) -> builtins.bool:
        value = self._get(key, default, False)
        if not isinstance(value, bool):
            raise ConfigError(self.field(key), f"expected true or false, got {_show(value)}")
        return value

    def int(
        self,
        key: builtins.str,
        default: builtins.int | None = None,
        *,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
        required: builtins.bool = False,
    ) -> builtins.int:
        value = self._get(key, default, required)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.field(key), f"expected an integer, got {_show(value)}")
        _check_range(self.field(key), value, min, max)
        return value

    def float(
        self,
        key: builtins.str,
        default: builtins.float | None = None,
        *,
        min: builtins.float | None = None,
        max: builtins.float | None = None,
        required: builtins.bool = False,
    ) -> builtins.float:
        """Reads a number (durations are float seconds everywhere)."""
        value = self._get(key, default, required)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.field(key), f"expected a number, got {_show(value)}")
        _check_range(self.field(key), value, min, max)
        return float(value)

    def choice(
        self,
        key: builtins.str,
        choices: tuple[builtins.str, ...],
        default: builtins.str | None = None,
    ) -> builtins.str:
        value = self.str(key, default, required=default is None)
        if value not in choices:
            raise ConfigError(
                self.field(key), f"expected one of {', '.join(choices)}, got {value!r}"
            )
        return value

    def str_list(
        self, key: builtins.str, default: tuple[builtins.str, ...] = ()
    ) -> tuple[builtins.str, ...]:
        value = self._get(key, list(default), False)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.field(key), f"expected a list of strings, got {_show(value)}")
        return tuple(value)

    def network_list(
        self, key: builtins.str, default: tuple[builtins.str, ...] = ()
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Reads a list of CIDRs (a bare address is a /32 or /128)."""
        result = []
        for i, text in enumerate(self.str_list(key, default)):
            try:
                result.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise ConfigError(f"{self.field(key)}[{i}]", f"not an IP network: {exc}") from None
        return tuple(result)

    def table(self, key: builtins.str) -> Table:
        value = self._get(key, {}, False)
        return Table(value, self.field(key))

    def tables(self, key: builtins.str) -> list[Table]:
        """Reads an array of tables (``[[section]]``)."""
        value = self._get(key, [], False)
        if not isinstance(value, list):
            raise ConfigError(self.field(key), f"expected an array of tables, got {_show(value)}")
        return [Table(item, f"{self.field(key)}[{i}]") for i, item in enumerate(value)]

    def raw(self, key: builtins.str, default: Any = None) -> Any:
        return self._get(key, default, False)

    def reject_unknown(self) -> None:
        """Raises on keys that no reader asked for (a typo must not pass silently)."""
        for key in self.data:
            if key not in self._used:
                raise ConfigError(self.field(key), "unknown field")


def _check_range(field: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ConfigError(field, f"must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(field, f"must be <= {hi}, got {value}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
