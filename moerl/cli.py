"""The ``moerl`` command line: ``train``, ``eval``, ``envs``, ``report``, ``sweep``, ``runs``.

Bad input of any kind ends with one line on stderr (``moerl: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from moerl.core.errors import ConfigError, DataNotFoundError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"moerl: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _seed(text: str) -> int:
    """An evaluation seed: an integer in numpy's seed range (a negative one was a gymnasium traceback)."""
    from moerl.core.seeding import check_seed

    value = _int(text)
    try:
        return check_seed(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from moerl import __version__
    from moerl.core.devices import DEVICES

    parser = _Parser(prog="moerl", description="Mixture-of-Experts and routing experiments.")
    parser.add_argument("--version", action="version", version=f"moerl {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{train,eval,envs,report,sweep,runs}")
    sub.required = True

    train = sub.add_parser(
        "train", help="train one run and write a run directory", add_help=False, allow_abbrev=False,
        description="Train one run. The env names the research line, and the line owns the rest of the flags: "
                    "'moerl train --env ENV --help' lists them (e.g. --arch, --router, --seeds for RL suites; "
                    "--algo, --epochs for routing datasets).")
    train.add_argument("-h", "--help", action="store_true", help="show this help (with --env: the line's flags too)")
    train.add_argument("--env", help="Gymnasium id, moerl short name (see 'moerl envs') or dataset suite")
    train.add_argument("--config", help="YAML config: a file or a shipped name, e.g. dqn/big-softmoe (an unknown name lists them)")
    train.add_argument("--logdir", help="parent directory of run directories (default: runs)")
    train.add_argument("--run-name", help="name of the run directory (default: <env>_<arch>[_<router>]-<config id>"
                       "_s<seed>, the id a hash of the config without seed and device)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override any config key, e.g. --set dqn.learning_rate=5e-4 (repeatable)",
    )
    train.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar or periodic progress lines (the summary is still printed)")
    loud = train.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=0,
                      help="print nothing but errors and the run directory")
    loud.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=2,
                      help="also print each evaluation (MoE DQN, routing) or epoch (masked experts) as it "
                      "happens, and MoE metrics (MoE DQN)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted, failed or crashed run from its last checkpoint "
                            "(with --timesteps or --epochs: to a new total); every family")

    ev = sub.add_parser("eval", help="reload a finished run and evaluate it")
    ev.add_argument("run_dir", help="a run directory written by 'moerl train'")
    ev.add_argument("--episodes", type=_positive_int,
                    help="evaluation episodes per task (RL; at most 1000, see the config key eval.episodes)")
    ev.add_argument("--seed", type=_seed, help="evaluation seed, in [0, 4294967295]")
    ev.add_argument("--device", help=f"{', '.join(DEVICES)} (default: the run's config)")
    ev.add_argument("--data-dir", help="directory with offline data files (supervised families)")
    ev.add_argument("--out", help="also write the results (JSON) to this file; the run directory is never written")

    sub.add_parser("envs", help="list the environments and task suites with their tasks")

    rep = sub.add_parser("report", help="study report over finished runs: MoE DQN (tables, rliable figures, "
                                        "claims), routing and masked experts (mean and 95%% CI over seeds)")
    rep.add_argument("run_dirs", nargs="+", help="run directories written by 'moerl train', or folders of them")
    rep.add_argument("--out", help="DIR (a name without a suffix, or an existing folder): write DIR/report.md and "
                                   "its PNG figures; FILE.md: the Markdown alone; any other suffix is refused")
    rep.add_argument("--curves", metavar="VARIANTS", help="the variants the evaluation-curve figures draw, by their "
                                                          "report labels, comma-separated (e.g. dense,big/softmoe; "
                                                          "default: all); needs --out DIR")

    runs = sub.add_parser("runs", help="one table of the runs below folders: status, config differences, final numbers")
    runs.add_argument("dirs", nargs="*", default=["runs"], metavar="DIR",
                      help="run directories or folders holding them (default: runs)")

    sw = sub.add_parser("sweep", help="train every run of a sweep file (grid x seeds): skips finished runs, "
                                      "resumes interrupted ones")
    sw.add_argument("sweep_file", help="a sweep YAML file (see configs/paper/ and the README's 'Studies')")
    sw.add_argument("--backend", default="local", help="local (a process pool here) or ray (Ray Tune); default: local")
    sw.add_argument("--workers", type=_positive_int, help="jobs at a time (default: the number of cores)")
    sw.add_argument("--device", help=f"device for every job ({', '.join(DEVICES)}; default: each config's)")
    sw.add_argument("--logdir", help="where the run directories go (default: the sweep file's logdir)")
    sw.add_argument("--address", help="ray backend: the cluster to attach to (default: RAY_ADDRESS, else a local Ray)")
    sw.add_argument("--gpus-per-job", type=float, default=0.0,
                    help="ray backend: the share of a GPU each job reserves (e.g. 0.25: four jobs per GPU); "
                         "default: 0.0")
    sw.add_argument("--max-members", type=_positive_int, default=None,
                    help="runs per process when runs of configs that differ only in env settings, seeds and "
                         "per-member dqn settings train as one batch (1: every job in its own process); "
                         "default: 64")
    sw.add_argument("--dry-run", action="store_true",
                    help="print what would run (groups included) and its estimated core time, then exit")
    # The process a sweep starts for a group of runs (moerl.runs.sweep.jobs.group_plans); not for users.
    grp = sub.add_parser("sweep-group", help=argparse.SUPPRESS)
    grp.add_argument("group_file")
    grp.add_argument("--device")
    return parser


def _env_from_config(path: str | None) -> str | None:
    if not path:
        return None
    from moerl.core.config import load_yaml

    env = load_yaml(path).get("env")
    return str(env) if env is not None else None


def cmd_train(args: argparse.Namespace, line_args: list[str], parser: argparse.ArgumentParser) -> int:
    """``moerl train``: the shared flags are parsed; the env (or the resumed run) names the line, whose own
    parser then takes the rest (``line_args``): a flag the line does not take is refused."""
    from moerl.runs.kinds import TrainRequest, family_by_name, options_help, parse_options
    from moerl.runs.rundir import check_outside_runs, check_run_name, resume_status

    given = {k: v for k, v in vars(args).items() if k in TrainRequest.__dataclass_fields__ and v is not None}
    if given.get("resume") is not None and "logdir" in given:
        raise ConfigError("--logdir cannot move a resumed run; it continues in its own directory")
    request = TrainRequest(**given)
    family: Any
    if request.resume is not None and not args.help:
        name = resume_status(request.resume)["family"]
        try:
            family = family_by_name(name)
        except ConfigError as exc:
            raise ConfigError(f"'{Path(request.resume) / 'status.json'}' names an {exc}") from None
    else:
        request.env = request.env or _env_from_config(request.config)
        family = _family_of(request.env) if request.env is not None else None
    train_help = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    if args.help:
        print(train_help.format_help() + ("\n" + options_help(family) if family is not None else ""))
        return 0
    if family is None:
        raise ConfigError("no environment given: pass --env (see 'moerl envs') or a --config that sets 'env'")
    request.options = parse_options(family, line_args, request.env, resumed=request.resume is not None)
    if request.run_name is not None:
        check_run_name(request.run_name)
    if request.resume is not None:
        if family.resume is None:
            raise ConfigError(f"runs of family '{family.name}' cannot be resumed yet")
        run_dirs = family.resume(request)
    else:
        check_outside_runs(request.logdir, "log directory")  # before a line builds data or envs
        run_dirs = family.train(request)
    for run_dir in run_dirs if isinstance(run_dirs, list) else [run_dirs]:
        print(f"run directory: {run_dir}")
    return 0


def _family_of(env: str) -> Any:
    """The family (research line) that trains ``env``, or the one-line refusal with every valid name."""
    from moerl.runs.kinds import families, family_for_env

    family = family_for_env(env)
    if family is None:
        import gymnasium as gym

        from moerl.core.errors import did_you_mean

        names = [name for fam in families() for name, _ in fam.list_envs() if not name.startswith("<")]
        raise ConfigError(
            f"unknown env '{env}'{did_you_mean(env, [*names, *gym.registry])}; valid choices: any Gymnasium id "
            f"(e.g. CartPole-v1) or one of {', '.join(names)}"
        )
    return family


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from moerl.runs.kinds import check_eval_options, family_by_name
    from moerl.runs.rundir import RunDir

    run = RunDir.open_finished(args.run_dir)
    family = family_by_name(run.read_status().get("family", ""))
    options = {k: v for k, v in vars(args).items() if k not in ("command", "run_dir") and v is not None}
    out = options.pop("out", None)
    check_eval_options(family, options)
    if out is not None:
        from moerl.runs.outputs import check_output_path

        check_output_path(out)
    results = family.evaluate(Path(args.run_dir), options)
    text = json.dumps(results, indent=2, default=str)
    if out is not None:
        from moerl.runs.outputs import JSON_MARK

        Path(out).write_text(json.dumps({JSON_MARK: "moerl eval", **results}, indent=2, default=str) + "\n")
    print(text)
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from moerl.runs.kinds import families

    for fam in families():
        print(f"[{fam.name}] {fam.description}")
        for name, desc in fam.list_envs():
            print(f"  {name:<24} {desc}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from moerl.report import report

    curves = [v.strip() for v in args.curves.split(",") if v.strip()] if args.curves is not None else None
    text, skipped = report(args.run_dirs, args.out, curves)
    for path, why in skipped:
        print(f"moerl: skipped {path}: {_one_line(why)}", file=sys.stderr)
    print(text)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from moerl.runs.listing import runs_report

    text, skipped = runs_report(args.dirs)
    print(text)
    if skipped:
        print(f"moerl: skipped (not runs): {_one_line(', '.join(p for p, _ in skipped))}", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from moerl.runs.sweep.launch import (
        DEFAULT_MAX_MEMBERS,
        SweepStopped,
        check_logdir_writable,
        check_options,
        dry_run,
        summary,
        sweep,
    )
    from moerl.runs.sweep.spec import load_sweep

    max_members = args.max_members or DEFAULT_MAX_MEMBERS
    if args.dry_run:
        check_options(args.backend, args.workers, args.device, args.address, args.gpus_per_job)
        spec = load_sweep(args.sweep_file, args.logdir)
        check_logdir_writable(Path(spec.logdir))
        dry_run(spec, max_members)
        return 0
    try:
        outcomes, spec = sweep(args.sweep_file, args.backend, args.workers, args.device, args.logdir,
                               args.address, args.gpus_per_job, max_members=max_members)
    except SweepStopped as stop:
        print(f"moerl: {stop}", file=sys.stderr)
        return stop.status
    print(summary(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)}/{len(outcomes)} jobs finished; runs in {spec.logdir}"
          + (f"; {len(failed)} failed (logs in {spec.logdir}/.sweep/logs)" if failed else ""))
    return 1 if failed else 0


def cmd_sweep_group(args: argparse.Namespace) -> int:
    """The process ``moerl sweep`` starts for a group of runs: trains them as one batch."""
    import yaml

    from moerl.runs.kinds import family_by_name

    data = yaml.safe_load(Path(args.group_file).read_text())
    family = family_by_name(data["family"])
    if family.train_group is None:
        raise ConfigError(f"runs of family '{family.name}' are not trained in groups")
    for run_dir in family.train_group(data["members"], data["logdir"], args.device):
        print(f"run directory: {run_dir}")
    return 0


MAX_ERROR_CHARS = 600
#: A quoted value longer than this is shown as its start and end around "...".
MAX_QUOTED_CHARS = 80
_QUOTED = re.compile(rf"'[^']{{{MAX_QUOTED_CHARS + 1},}}'|\"[^\"]{{{MAX_QUOTED_CHARS + 1},}}\"")


def _short_quote(match: re.Match[str]) -> str:
    quoted = match.group(0)
    inner, keep = quoted[1:-1], MAX_QUOTED_CHARS // 2
    return f"{quoted[0]}{inner[:keep]}...{inner[-keep // 2:]}{quoted[0]} ({len(inner):,} characters)"


def _one_line(text: str) -> str:
    """An error as one line of bounded length (messages may quote user input of any size).

    Why the quoted values are shortened first: a message names the bad value and then the valid choices, so
    cutting the line at its end would drop the choices behind a huge value (a 500 KB string in a config
    file). In a line over the cap, every quoted value longer than :data:`MAX_QUOTED_CHARS` keeps its start
    and end; only a line that is still too long is cut.
    """
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = _QUOTED.sub(_short_quote, text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 15] + " ... (truncated)"


COMMANDS = {"eval": cmd_eval, "envs": cmd_envs, "report": cmd_report, "sweep": cmd_sweep,
            "runs": cmd_runs, "sweep-group": cmd_sweep_group}


#: Exit status when stdout is closed early (``moerl report runs | head``): 128 + SIGPIPE, what a shell
#: reports for a Unix tool that the closed pipe stopped.
EXIT_BROKEN_PIPE = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """``moerl``: run one command; a reader that closed stdout (``| head``) ends it quietly, as for any
    Unix tool (see "Note on SIGPIPE" in the Python docs of :mod:`signal`), not with an error line."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # inside the try: a closed pipe found at the last flush is handled too
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":  # only train hands the rest of its line to the research line
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "train":
            return cmd_train(args, rest, parser)
        return COMMANDS[args.command](args)
    except (ConfigError, DataNotFoundError) as exc:
        print(f"moerl: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # stdout closed by its reader: handled by main, without a line
    except OSError as exc:  # the machine's fault (full disk, read-only storage), not the user's input
        print(f"moerl: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        from moerl.runs.rundir import Terminated

        if isinstance(exc, Terminated):
            print("moerl: terminated (SIGTERM)", file=sys.stderr)
            return 143
        print("moerl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
