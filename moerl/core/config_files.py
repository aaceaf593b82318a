"""The YAML configs shipped inside the package, found by short name.

Why this module: the configs (one per arch x router, the rl-zoo settings, the routing demos, the seed-000
vision grid) used to live in a top-level ``configs/`` directory that only existed in a source checkout,
so ``moerl train --config configs/dqn/big-softmoe.yaml`` failed after a plain ``pip install``. They now
ship as package data under ``moerl/configs/`` and ``--config`` accepts either a file path or a shipped
name such as ``dqn/big-softmoe``. Old commands keep working: a leading ``configs/`` and a ``.yaml``
suffix are accepted, and an existing file always wins over a shipped name.

Only the standard library and :mod:`moerl.core.errors` are imported, so the CLI can resolve names without
importing torch.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import NoReturn

from moerl.core.errors import ConfigError, did_you_mean

#: Directory of the shipped configs (``<family>/<name>.yaml``), inside the installed package.
CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"

_SUFFIXES = (".yaml", ".yml")
_PREFIXES = ("./", "moerl/configs/", "configs/")


def shipped_configs() -> list[str]:
    """Sorted short names (``dqn/rlzoo-cartpole``, ``vision/G7``, ...) of every shipped config."""
    return sorted(
        path.relative_to(CONFIG_ROOT).with_suffix("").as_posix()
        for path in CONFIG_ROOT.rglob("*")
        if path.is_file() and path.suffix in _SUFFIXES
    )


def _short_name(text: str) -> str:
    """Strip the spellings a user may add around a shipped name: ``./``, ``configs/``, ``.yaml``."""
    name = text.replace("\\", "/")
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def resolve_config_file(text: str | os.PathLike[str]) -> Path:
    """Turn the value of ``--config`` into the path of a YAML file.

    An existing file path wins; otherwise ``text`` names a shipped config (``dqn/rlzoo-cartpole``,
    ``dqn/rlzoo-cartpole.yaml`` or ``configs/dqn/rlzoo-cartpole.yaml``). Anything else raises a one-line
    :class:`~moerl.core.errors.ConfigError` with a "did you mean" and the list of shipped names.
    """
    path = Path(text)
    if path.is_file():
        return path
    name = _short_name(os.fspath(text))
    for suffix in _SUFFIXES:
        candidate = CONFIG_ROOT / f"{name}{suffix}"
        if name and candidate.is_file():
            return candidate
    _unknown(os.fspath(text))


def _unknown(text: str) -> NoReturn:
    names = shipped_configs()
    short = _short_name(text)
    # The whole name first ("dqn/big-sofmoe"), then the base name alone ("big-sofmoe", "vision/G7b.yml").
    hint = did_you_mean(short, names)
    if not hint:
        by_base = {name.rsplit("/", 1)[-1]: name for name in names}
        close = difflib.get_close_matches(short.rsplit("/", 1)[-1], list(by_base), n=1, cutoff=0.6)
        hint = f" (did you mean '{by_base[close[0]]}'?)" if close else ""
    raise ConfigError(
        f"config '{text}' does not exist: it is neither a file nor a shipped config{hint}; "
        f"shipped configs: {', '.join(names)}"
    )
