"""Registration of moerl's Gymnasium ids (idempotent, runs on ``import moerl``)."""

from __future__ import annotations


def register_all() -> None:
    """Register every ``moerl/...`` id with Gymnasium (each part adds its own ids here)."""
