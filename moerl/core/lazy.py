"""Lazy attribute access for package ``__init__`` modules (PEP 562).

Why: ``from moerl import MoEDQN`` should work like SB3's ``from stable_baselines3 import DQN``, yet
``import moerl`` (and the CLI's ``--help``) must not pay for torch, SB3 and every research line. A package
lists its public names and the module that defines each; the module is imported on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str],
                 also: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import ``exports[name]`` (a module path) on demand.

    ``dir(package)`` advertises exactly the exports and ``also`` (names defined in the package itself, such
    as ``__version__``): what a user may rely on, each reachable with ``getattr``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(also))

    return __getattr__, __dir__
