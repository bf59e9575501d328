"""Name -> builder registries: each model, optimizer, schedule or augmentation is one entry."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from cifarlab.errors import ConfigError, did_you_mean

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str | None] = {}   # name -> the plug-in module that registered it (None: built in)
        self._reads: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {}

    def register(self, name: str, origin: str | None = None, *, keys: tuple[str, ...] = (),
                 option_names: tuple[str, ...] | None = None) -> Callable[[T], T]:
        """Decorator adding `name`. `origin`: the plug-in module registering it (None: the package's
        own). The same module registering a name again (a plug-in reloaded in a notebook) replaces
        its entry; a built-in name, or another module's, is refused in one line. `keys`: dotted config
        keys only this entry reads (refused away from their defaults under another entry of the
        registry); `option_names`: the keys of its section's `options` table it reads (None: not
        declared, so not checked)."""
        if isinstance(option_names, str) or isinstance(keys, str):
            raise TypeError(f"{self.kind} {name!r}: keys and option_names are tuples of names, e.g. ('gamma',), "
                            f"not the string {option_names if isinstance(option_names, str) else keys!r}")

        def add(fn: T) -> T:
            if name in self._entries and not (origin is not None and self._origin.get(name) == origin):
                was = self._origin.get(name)
                raise ValueError(f"{self.kind} {name!r} is built in; register the plug-in's under another name"
                                 if was is None and origin is not None else
                                 f"{self.kind} {name!r} registered twice (by {was or 'cifarlab'} and by "
                                 f"{origin or 'cifarlab'}); give one of them another name")
            self._entries[name] = fn
            self._origin[name] = origin
            self._reads[name] = (tuple(keys), None if option_names is None else tuple(option_names))
            return fn
        return add

    def keys_of(self, name: str) -> tuple[str, ...]:
        """The config keys only entry `name` reads (`register(keys=...)`)."""
        return self._reads.get(name, ((), None))[0]

    def options_of(self, name: str) -> tuple[str, ...] | None:
        """The `options` keys entry `name` reads, or None where it did not declare them."""
        return self._reads.get(name, ((), None))[1]

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
