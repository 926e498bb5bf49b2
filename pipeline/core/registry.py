"""Named extension points: strategies, methods and oracles are objects in a `Registry`.

A registry maps a name (what params.yaml says) to an object. The built-in entries live in
the layer that owns them (`pipeline.selection`, `pipeline.method`, `pipeline.oracle`) and
register themselves when their module is imported; a registry imports those modules the
first time it is asked, by name, so this module imports nothing above `core`. A user's
own entries come from the modules listed under `plugins:` in params.yaml
(`pipeline.core.plugins`).

    STRATEGIES.register(LeastConfidence())   # an object with a `name`
    STRATEGIES.get("least_confidence")       # the object; an unknown name raises
"""
from __future__ import annotations

import importlib
from typing import Generic, Iterator, Protocol, TypeVar

from pipeline.core.errors import ObcpError


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class RegistryError(ObcpError):
    """An unknown name, or two entries with the same name."""


class Registry(Generic[T]):
    """Name → object, in registration order (built-ins first)."""

    def __init__(self, kind: str, builtins: tuple[str, ...]) -> None:
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)

    def register(self, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `entry.name`; a second entry of the same name raises unless `replace`."""
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(f"a {self.kind} needs a `name` that is an identifier, got {name!r} ({entry!r}).")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise RegistryError(f"two {self.kind}s are named {name!r}: {self._entries[name]!r} and {entry!r}.")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r} (known: {', '.join(self._entries)}).")
        return self._entries[name]

    def _ordered(self) -> list[T]:
        """Built-ins in the order of their modules in `builtins` (whoever imported one first),
        each module's entries in registration order, then the others (plugins) as registered."""
        self._load()
        rank = {module: i for i, module in enumerate(self._builtins)}
        entries = list(self._entries.values())
        return sorted(entries, key=lambda e: (rank.get(type(e).__module__, len(rank)), entries.index(e)))

    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self._ordered())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._ordered())


STRATEGIES: Registry = Registry("selection strategy", (
    "pipeline.selection.strategies", "pipeline.selection.onebit_aware", "pipeline.selection.coreset",
    "pipeline.selection.badge", "pipeline.selection.bayesian", "pipeline.selection.ensemble",
    "pipeline.selection.ll4al", "pipeline.selection.vaal", "pipeline.selection.typiclust"))
METHODS: Registry = Registry("method", ("pipeline.method.methods",))
ORACLES: Registry = Registry("oracle", ("pipeline.oracle.oracles",))
