"""Name -> builder registries: each model, optimizer, schedule or augmentation is one entry."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from cifarlab.errors import ConfigError, did_you_mean

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = fn
            return fn
        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}"
                              + did_you_mean(str(name), self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def choices(self) -> list[str]:
        """The names in the order they were registered: the order their module documents them in."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
