"""Configs as plain, typed data.

Experiment configs are dataclasses. They are filled from YAML files and ``--set key=value``
overrides through :func:`from_dict`, which rejects unknown keys (with a "did you mean") and values of
the wrong type, so a typo in a config can never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from moerl.core.errors import ConfigError, did_you_mean

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads ``5e-4`` / ``1E-3`` as numbers, and refuses what YAML 1.1
    would read silently against the writer's intent.

    PyYAML follows YAML 1.1, whose float pattern needs a dot (``5.0e-4``), so ``learning_rate: 5e-4`` was a
    string; every config a user writes and every ``--set`` value is read with this loader instead. YAML 1.1
    also reads ``seed: 010`` as octal 8 and ``1:30`` as 90 (base 60), and keeps the last of two equal keys:
    each of those is an error here, naming the value or the key.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {key_node.start_mark.line + 1}): give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        digits = text.lstrip("+-")
        if (len(digits) > 1 and digits[0] == "0" and digits.isdigit()) or ":" in digits:
            raise yaml.constructor.ConstructorError(
                None, None, f"'{text}' is ambiguous (YAML 1.1 reads it as {super().construct_yaml_int(node)}); "
                f"write the number without leading zeros or colons, or quote it as a string", node.start_mark)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?\.[0-9_]+[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


#: Limits on YAML input, checked before anything is expanded: a config is a few hundred bytes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 10_000


def _check_expanded_size(data: Any, where: str) -> None:
    """Refuse YAML whose aliases expand to more than :data:`MAX_YAML_NODES` values (an alias bomb).

    PyYAML shares aliased objects, so loading is cheap, but every later copy (merges, ``to_dict``, the run's
    ``config.yaml``) would expand them; the walk stops as soon as the limit is passed.
    """
    count = 0
    stack = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{where} expands to more than {MAX_YAML_NODES:,} values (YAML aliases?); refused")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_yaml(text: str, where: str = "YAML input") -> Any:
    """Parse YAML text with moerl's loader (numbers in scientific notation are numbers), size-limited."""
    if len(text.encode(errors="replace")) > MAX_YAML_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_YAML_BYTES:,} bytes; refused")
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    _check_expanded_size(data, where)
    return data


def yaml_error(exc: yaml.YAMLError | UnicodeDecodeError) -> str:
    """Where a YAML text is wrong and what is wrong, in one line: ``at line L, column C: <problem>`` (and the
    construct it was in, e.g. ``(while parsing a flow sequence started at line 1, column 8)``).

    Why not ``str(exc)``: PyYAML's message spans several lines, the first of which is often only the context
    ("while parsing a flow sequence"), which says neither what is wrong nor where.
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return ": " + (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    text = (f" at {at(exc.problem_mark)}" if exc.problem_mark is not None else "") + ": "
    text += exc.problem or exc.context or type(exc).__name__
    if exc.problem and exc.context:
        text += f" ({exc.context}" + (f" started at {at(exc.context_mark)}" if exc.context_mark else "") + ")"
    return text


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (a file or a shipped config's name) with clear errors; ``what``
    names the file in them (``config file``, ``sweep file``)."""
    from moerl.core.config_files import resolve_config_file

    path = resolve_config_file(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist or is not a file")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} '{path}' is larger than {MAX_YAML_BYTES:,} bytes; refused")
    try:
        data = parse_yaml(path.read_text(), f"{what} '{path}'")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{path}' is not valid YAML{yaml_error(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' must hold a mapping at top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a", "b", "c"], value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (for example dqn.learning_rate=1e-3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively.

    ``where`` is the dotted path used in error messages (e.g. ``network.``).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{where.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            nested = _nested_home(cls, str(key))
            hint = f" (it lives under '{where}{nested}')" if nested else did_you_mean(key, fields)
            raise ConfigError(f"unknown config key '{where}{key}'{hint}; valid keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{where}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"config section '{where.rstrip('.') or '<root>'}': {exc}") from None


def _nested_home(cls: type, key: str) -> str | None:
    """``section.key`` when ``key`` is a field of one of ``cls``'s dataclass sections (for error hints)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and key in {g.name for g in dataclasses.fields(tp)}:
            return f"{f.name}.{key}"
    return None


def leaf_keys(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the non-mapping values of a nested mapping: the keys a user actually gave."""
    out: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= leaf_keys(value, f"{path}.")
        else:
            out.add(path)
    return out


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"a.b": value}`` (lists and other leaves kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))  # an empty mapping adds nothing: {} and a missing key agree
        else:
            out[name] = value
    return out


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``path == "a.b.c"``, creating sections as needed."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{path}': '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def unflatten_aliases(data: Mapping[str, Any], aliases: Mapping[str, str], where: str = "config") -> dict[str, Any]:
    """Move top-level keys that are aliases (the CLI's flat names, e.g. ``arch``) to their nested home.

    ``aliases`` maps a flat name to its dotted key (``arch -> network.arch``); entries mapping a name to
    itself are ignored. Giving both the flat and the nested key is refused: one of them would be ignored.
    """
    out = _deep_copy(dict(data))
    for flat, path in aliases.items():
        if flat == path or flat not in out:
            continue
        value = out.pop(flat)
        node: Any = out
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            raise ConfigError(f"{where} gives both '{flat}' and '{path}' (the same setting); keep one")
        set_path(out, path, value)
    return out


def dotted_keys(data: Mapping[str, Any], aliases: Mapping[str, str], where: str) -> dict[str, Any]:
    """A mapping of config keys, each dotted (``dqn.learning_rate``), nested (``dqn: {learning_rate: ..}``)
    or a flat alias (``arch`` for ``network.arch``), as ``{dotted key: value}`` with one entry per setting.

    Why: these spellings can name one setting twice in one mapping, and whichever came last would win
    silently; as config files refuse ``arch`` beside ``network.arch`` (:func:`unflatten_aliases`), a key
    given twice here is refused with one line naming it and both spellings.
    """
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}

    def add(path: str, value: Any, spelling: str) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                add(f"{path}.{key}", inner, spelling)
            return
        if path in out:
            raise ConfigError(f"{where} gives '{path}' twice (as {spelled[path]} and as {spelling}); keep one")
        out[path], spelled[path] = value, spelling

    for key, value in data.items():
        path = aliases.get(str(key), str(key))
        nested = isinstance(value, Mapping) and value
        add(path, value, f"'{key}: {{...}}'" if nested else f"'{key}'")
    return out


def resolve(
    schema: type[T],
    *,
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> tuple[T, frozenset[str]]:
    """The one config pipeline of every family: defaults < ``file`` < ``flags`` < ``overrides`` (``--set``).

    ``flags`` maps dotted keys to values (``{"network.arch": "big"}``); ``aliases`` lets files and
    ``--set`` use the CLI's flat names. Returns the typed config and the set of keys the user gave
    (file, flags and overrides), so that a family can refuse a setting that would not take effect.
    """
    aliases = aliases or {}
    data = unflatten_aliases(load_yaml(file), aliases, f"config file '{file}'") if file else {}
    for path, value in (flags or {}).items():
        set_path(data, path, value)
    for text in overrides:
        keys, value = parse_override(text)
        path = ".".join(keys)
        set_path(data, aliases.get(path, path), value)
    return from_dict(schema, data), frozenset(leaf_keys(data))


def to_dict(obj: Any) -> Any:
    """Turn a (nested) dataclass into plain dicts/lists, ready for YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key '{key}' has a bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(
                f"config key '{key}' has value '{value}'{did_you_mean(str(value), [str(a) for a in args])}; "
                f"valid choices: {choices}"
            )
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or int(value) != value):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value
