"""``moerl report RUN_DIR...``: one report over runs of every research line.

The RL line's tables, studies and claims (:mod:`moerl.rl.report`), the supervised lines' summary
(:mod:`moerl.runs.supervised_report`) and the routing figures (:mod:`moerl.routing.figures`) are put
together here, above the lines, so that no line imports another.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from moerl.core.errors import ConfigError
from moerl.rl.report.data import group_runs, load_runs
from moerl.rl.report.study import build_studies
from moerl.rl.report.summary import markdown_table, study_markdown, summary_table, with_dormant
from moerl.runs import supervised_report as report_supervised
from moerl.runs.outputs import MARKDOWN_MARK, REPORT_FILE, check_output_dir, check_output_path
from moerl.runs.provenance import stacks_markdown


def _is_file_target(out: str) -> bool:
    """Which of the two forms ``--out`` is: ``FILE.md`` (or an existing file) writes the Markdown alone;
    ``DIR`` (an existing folder, a name ending in ``/``, or a name without a suffix) writes ``DIR/report.md``
    and its figures. Any other suffix is refused: ``--out out.txt`` once made a folder named ``out.txt``,
    and writing Markdown under another suffix would surprise as much."""
    path = Path(out)
    if path.is_dir() or out.endswith(("/", os.sep)):
        return False
    if path.suffix.lower() == ".md" or path.is_file():
        return True
    if path.suffix:
        raise ConfigError(f"--out '{out}' has the suffix '{path.suffix}'; give FILE.md (the Markdown alone) or "
                          f"a folder name without a suffix (DIR/report.md and its figures), e.g. "
                          f"{path.with_suffix('.md')} or {path.with_suffix('')}")
    return False


def report(paths: list[str], out: str | None = None,
           curves: list[str] | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The Markdown report over ``paths`` and the skipped paths with their reasons.

    ``out``: ``DIR`` writes ``DIR/report.md`` and the figures (``DIR/*.png``), built in a temporary folder
    beside it and renamed, so a failure leaves nothing half-written; ``FILE.md`` writes the Markdown alone.
    Without ``out`` (or with ``FILE.md``) the report has no figures, and says how to get them.
    ``curves``: the variant labels the evaluation-curve figures draw (None: all); a study with eleven variants
    draws an unreadable figure, and the claims compare a few. Refused without figures to draw, or with a
    label no group of the runs has.
    """
    file_target = check_output_path(out) if out and _is_file_target(out) else None
    dir_target = check_output_dir(out) if out and file_target is None else None
    if curves is not None and dir_target is None:
        raise ConfigError("--curves chooses what the figures draw: it needs --out DIR (a folder for report.md and "
                          "its figures)")
    if curves is not None and not curves:
        raise ConfigError("--curves needs at least one variant label, e.g. dense,big/softmoe")
    supervised, sup_skipped = report_supervised.load_supervised(paths)
    runs, skipped = load_runs(paths, required=not supervised)
    taken = {str(r.path.resolve()) for r in supervised} | {str(Path(p).resolve()) for p, _ in sup_skipped}
    skipped = [(p, why) for p, why in skipped if str(Path(p).resolve()) not in taken] + sup_skipped
    stacks, warning = stacks_markdown([run.path for run in runs] + [run.path for run in supervised])
    if not runs:  # masked-expert and routing runs only
        text = (warning + "\n\n" if warning else "") + report_supervised.markdown(supervised) + "\n\n" + stacks
        if dir_target is not None:
            _write_dir([], dir_target, text, studies_section=False, supervised=supervised)
        elif file_target is not None:
            _write_file(file_target, text)
        return text, skipped
    results = [with_dormant(run) for run in runs]
    groups = group_runs(runs)
    text = (warning + "\n\n" if warning else "") + markdown_table(results) + "\n\n" + summary_table(
        groups, {run.path: r for run, r in zip(runs, results, strict=True)})
    if supervised:
        text += "\n\n" + report_supervised.markdown(supervised)
    text += "\n\n" + stacks
    studies = build_studies(groups)
    if curves is not None:
        labels = sorted({g.label for g in groups})
        unknown = [c for c in curves if c not in labels]
        if unknown:
            raise ConfigError(f"--curves '{unknown[0]}' is not a variant of these runs; their variants: "
                              f"{', '.join(labels)}")
    if dir_target is None:
        text += "\n\n" + study_markdown(studies, None)
        if file_target is not None:
            _write_file(file_target, text)
        return text, skipped
    text += "\n\n" + _write_dir(studies, dir_target, text, supervised=supervised, curves=curves)
    return text, skipped


def _write_file(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(MARKDOWN_MARK + "\n" + text + "\n")
    tmp.replace(target)


def _write_dir(studies: list[Any], target: Path, head: str, studies_section: bool = True,
               supervised: list[Any] | None = None, curves: list[str] | None = None) -> str:
    """``target/report.md`` and its figures: the MoE DQN studies' and, for routing runs among
    ``supervised``, the learning curves and routing maps (:mod:`moerl.routing.figures`)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        body = study_markdown(studies, tmp, curves) if studies_section else ""
        if supervised:
            from moerl.routing.figures import routing_figures
            from moerl.runs.supervised_report import group_variants

            figures = routing_figures(group_variants(supervised), tmp)
            if figures:
                body += "\n\n## Routing figures\n\n" + "\n".join(figures)
        (tmp / REPORT_FILE).write_text(MARKDOWN_MARK + "\n" + (head + "\n\n" + body).rstrip() + "\n")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return body
