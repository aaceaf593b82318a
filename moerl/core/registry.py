"""Registries of named choices: each choice (arch, router, routing algorithm, dataset, env short name, ...)
is defined once, with a one-line description, and everything else reads it.

Why our own small class instead of a library: the registries must be importable without torch (the CLI
builds its help from them at start-up) and must produce moerl's one-line errors with a "did you mean".
Help texts, validation, ``moerl envs``, the README's tables (checked by a test) and "did you mean" all read
the same :class:`Registry`, so a name cannot be valid in one place and unknown in another.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from moerl.core.errors import ConfigError, choice_error


class Registry(Mapping[str, str]):
    """An ordered, read-only mapping ``name -> description`` of the valid values of one kind of choice.

    >>> colours = Registry("colour", {"red": "warm", "blue": "cold"})
    >>> colours.check("red")
    'red'
    >>> colours.help()
    'red, blue'
    """

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        if not entries:
            raise ValueError(f"registry '{kind}' needs at least one entry")
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, value: object) -> str:
        """Return ``value`` if it names a choice, else raise the one-line :class:`ConfigError`."""
        if not isinstance(value, str) or value not in self._entries:
            raise choice_error(self.kind, value, self._entries)
        return value

    def error(self, value: object) -> ConfigError:
        """The one-line error for a value that is not a choice (with a "did you mean")."""
        return choice_error(self.kind, value, self._entries)

    def help(self) -> str:
        """``a, b, c`` in definition order, for ``--help`` texts."""
        return ", ".join(self._entries)

    def markdown(self, header: tuple[str, str] | None = None) -> str:
        """A two-column Markdown table (``name | description``), for the docs."""
        left, right = header or (self.kind, "what it is")
        rows = [f"| {left} | {right} |", "|---|---|"]
        rows += [f"| `{name}` | {desc} |" for name, desc in self._entries.items()]
        return "\n".join(rows)
