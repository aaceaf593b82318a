"""User-facing errors.

Every mistake a user can make on the command line or in a config file raises :class:`ConfigError`
with one line that names the bad value and the valid choices. The CLI turns it into a message on
stderr and exit status 2; library users get an ordinary ``ValueError`` subclass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MoerlError(Exception):
    """Base class of moerl's own exceptions."""


class ConfigError(MoerlError, ValueError):
    """Bad user input: unknown name, impossible number, malformed config, unreadable path."""


class DataNotFoundError(MoerlError, FileNotFoundError):
    """A real data set is not on this machine; the message says where to put it."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choice_error(what: str, value: object, choices: Iterable[str]) -> ConfigError:
    """Build the one-line error for a value that is not among ``choices``."""
    choices = sorted(str(c) for c in choices)
    return ConfigError(
        f"unknown {what} '{value}'{did_you_mean(str(value), choices)}; valid choices: {', '.join(choices)}"
    )


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :func:`choice_error`."""
    choices = list(choices)
    if value not in choices:
        raise choice_error(what, value, choices)
    return value


def check_positive(what: str, value: float, *, allow_zero: bool = False) -> float:
    """Raise a :class:`ConfigError` unless ``value`` is positive (or zero when allowed)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{what} must be {bound}, got {value}")
    return value
