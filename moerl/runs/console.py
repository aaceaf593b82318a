"""What ``moerl train`` prints while it trains and when it ends, the same way for every family.

Why one module: the three families used to print three different things (a bare step counter, a tqdm bar
that wrote every redraw into log files, nothing at all for minutes). Here each family only says *what*
matters (progress, the quantities beside it, evaluation lines, a closing table) and :class:`Console`
decides *how*:

* on a terminal (``stream.isatty()``), a live tqdm bar with the quantities as its postfix (tqdm gives
  the rate and ETA), lines printed above it;
* elsewhere (a log file, a pipe, a sweep job), plain lines: one when progress starts, then at most one
  every :data:`PLAIN_SECONDS` seconds, and the last at the end, each with its own rate and ETA, so a
  log grows by a bounded amount however long the run (a tqdm bar writes a redraw ten times a second);
* ``--quiet`` (:data:`QUIET`): nothing but errors (and the run-directory lines the CLI prints itself);
  ``--verbose`` (:data:`VERBOSE`): also the :meth:`Console.detail` lines (every evaluation as it
  happens, MoE metrics); ``--no-progress``: no bar and no periodic lines, the rest as usual.

Progress and lines go to stderr (where tqdm and Python's logging write), the closing summary to stdout
with the run directory, so ``moerl train ... > out.txt`` keeps the results and leaves the bar on screen.
Nothing here touches training: it only reads numbers the trainers have already computed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

#: Verbosity levels (``--quiet``, default, ``--verbose``).
QUIET, NORMAL, VERBOSE = 0, 1, 2
#: Seconds between two plain progress lines when the output is not a terminal.
PLAIN_SECONDS = 30.0


def duration(seconds: float) -> str:
    """``"45s"``, ``"12m05s"``, ``"3h02m"``: short, fixed-format, for ETAs and elapsed times."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def plural(unit: str) -> str:
    """``step`` -> ``steps``, ``batch`` -> ``batches``."""
    return {"batch": "batches"}.get(unit, unit + "s")


def number(value: Any, digits: int = 2) -> str:
    """A table cell: ``-`` for missing, floats to ``digits`` places, ints with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def text_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Aligned plain-text rows (first column left, the others right): readable in a terminal and a log."""
    cells = [list(map(str, head))] + [[c if isinstance(c, str) else number(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])]


class Console:
    """The output of one ``moerl train``: progress (live or plain), lines, and the closing summary.

    ``live``: None decides by ``stream.isatty()``; ``progress=False`` (``--no-progress``) shows no
    progress at all but keeps the lines and the summary.
    """

    def __init__(self, verbosity: int = NORMAL, progress: bool = True, stream: TextIO | None = None,
                 out: TextIO | None = None, live: bool | None = None, plain_seconds: float = PLAIN_SECONDS) -> None:
        self.verbosity = verbosity
        self.stream = stream if stream is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.live = bool(live if live is not None else _isatty(self.stream))
        self.show_progress = progress and verbosity > QUIET
        self.plain_seconds = plain_seconds
        self._bar: Any = None
        self._status: Any = None
        self._label = ""
        self._unit = "step"
        self._total: int | None = None
        self._done = 0
        self._initial = 0
        self._fields: dict[str, str] = {}
        self._t0 = 0.0
        self._last_line = 0.0

    # -- lines ------------------------------------------------------------------------------------
    def say(self, text: str, level: int = NORMAL) -> None:
        """A line on the progress stream at ``level`` or above (above the live bar when one is open)."""
        if self.verbosity < level:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def detail(self, text: str) -> None:
        """A ``--verbose`` line (every evaluation, MoE metrics)."""
        self.say(text, VERBOSE)

    # -- progress ---------------------------------------------------------------------------------
    def start(self, label: str, total: int | None, unit: str = "step", initial: int = 0) -> None:
        """Progress of ``total`` ``unit``\\ s begins (at ``initial`` when resumed); says so at once."""
        self.close()
        self._label, self._unit, self._total, self._initial, self._done = label, unit, total, initial, initial
        self._fields = {}
        self._t0 = self._last_line = time.perf_counter()
        if not self.show_progress:
            return
        if self.live:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            # two lines: the bar (rate, ETA) and under it the quantities, which would not fit beside it
            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=label, file=self.stream,
                             dynamic_ncols=True, leave=True, bar_format="{l_bar}{bar:20}{r_bar}")
            self._status = tqdm(total=0, position=1, bar_format="  {desc}", file=self.stream, dynamic_ncols=True,
                                leave=True)
        else:
            self._plain_line()

    def update(self, done: int, fields: Mapping[str, str] | None = None) -> None:
        """Progress stands at ``done`` units; ``fields`` (name -> formatted value) replace those shown."""
        self._done = done
        if fields is not None:
            self._fields = dict(fields)
        if not self.show_progress:
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            now = time.perf_counter()
            if fields is not None and now - self._last_line >= 0.2:  # as tqdm, a few redraws a second
                self._last_line = now
                self._status.set_description_str(self._postfix(), refresh=True)
        elif time.perf_counter() - self._last_line >= self.plain_seconds:
            self._plain_line()

    def close(self) -> None:
        """Progress ends: the bar closes, or the last plain line is written (once)."""
        if self._bar is not None:
            self._bar.refresh()
            self._status.set_description_str(self._postfix(), refresh=True)
            self._bar.close()
            self._status.close()
            self._bar = self._status = None
        elif self._label and self.show_progress and not self.live:
            self._plain_line()
        self._label = ""

    def _postfix(self) -> str:
        return " | ".join(f"{k} {v}" for k, v in self._fields.items())

    def _plain_line(self) -> None:
        self._last_line = now = time.perf_counter()
        elapsed = now - self._t0
        made = self._done - self._initial
        rate = made / elapsed if elapsed > 0 and made > 0 else None
        if self._total:
            where = f"{self._done:,}/{self._total:,} {plural(self._unit)} ({100 * self._done / self._total:.0f}%)"
        else:
            where = f"{self._done:,} {plural(self._unit)}"
        parts = [f"{self._label}: {where}", f"elapsed {duration(elapsed)}"]
        if rate is not None:
            parts.append(f"{rate:,.1f} {plural(self._unit)}/s" if rate < 100 else f"{rate:,.0f} {plural(self._unit)}/s")
            if self._total:
                parts.append(f"ETA {duration((self._total - self._done) / rate)}")
        if self._fields:
            parts.append(self._postfix())
        print(" | ".join(parts), file=self.stream, flush=True)

    # -- the end ------------------------------------------------------------------------------------
    def summary(self, lines: Sequence[str]) -> None:
        """The closing summary (tables, notes) on stdout; nothing under ``--quiet``."""
        self.close()
        if self.verbosity > QUIET and lines:
            self.stream.flush()
            print("\n".join(lines), file=self.out, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
