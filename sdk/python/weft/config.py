"""The role's settings, through the standard ``wasi:config/store`` interface.

Settings are the strings under ``[roles.<name>.settings]`` in the service's
``weft.toml`` (declared there with their defaults, changed with ``weft
settings``); a role sees only its own. Failures raise
:class:`~weft.errors.ConfigError`.
"""

from __future__ import annotations

from wit_world.imports import wasi_config_store as _wit

from . import _wire

__all__ = ["get", "get_all"]


def get(key: str) -> str | None:
    """The setting ``key``, or None if it is not set."""
    return _wire.call(_wit.get, key)


def get_all() -> dict[str, str]:
    """Every setting, by name."""
    return dict(_wire.call(_wit.get_all))
