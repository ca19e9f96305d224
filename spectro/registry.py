"""Name -> implementation lookup for each pluggable kind (corpora, features, models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry:
    """Implementations of one kind, registered by decorator; an unknown name lists the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            key = name or fn.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = fn
            return fn

        return decorator

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise ConfigError(f"{self.kind}={name!r} is unknown; choose one of {self.names()}")
        return self._items[name]
