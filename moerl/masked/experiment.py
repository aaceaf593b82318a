"""``moerl train --env <vision suite>``: masked-expert models and PackNet (seed 000).

Config resolution: defaults of :class:`MaskedExpertsConfig` <- ``--config FILE`` <- CLI flags
(``--arch --mask --experts --epochs --seed --device --data-dir``) <- ``--set key=value``. Everything is
validated (and the data loaded) before the run directory is created, so bad input leaves nothing behind.

Run directory: ``config.yaml``, ``status.json``, ``tb/`` (TensorBoard), ``results.json`` (train/val/test
numbers, train-test gap, routing, continual metrics), ``model.pt``, ``history.csv`` and PNG plots
(``learning_curves.png``, ``routing.png``, ``mask_density.png``).

Checkpoints and resume: every ``checkpoint_every`` epochs (counted over all phases) and on the first SIGINT /
SIGTERM (the learner stops at the end of the epoch it is in; a second signal interrupts at once) the
learner's whole :meth:`state_dict` goes to ``checkpoints/epoch-N/state.pt`` (:mod:`moerl.core.checkpoint_store`:
atomic, ``checkpoint.json`` points at it). ``moerl train --resume RUN_DIR [--device D]`` rebuilds the data
and the learner from the run's ``config.yaml``, loads the checkpoint and trains on; TensorBoard events the
killed process wrote after the checkpoint are purged. The finished run's files are those of an
uninterrupted run bit for bit (``train_seconds`` aside: it adds the time of every process; on the same
device), and its checkpoint is removed, as a run that was never cut keeps none either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moerl.core.checkpoint_store import load_checkpoint_file, remove_checkpoints, save_torch, write_checkpoint
from moerl.core.config import from_dict, resolve, to_dict
from moerl.masked.config import MaskedExpertsConfig
from moerl.runs.console import Console, duration, text_table
from moerl.runs.kinds import (
    Family,
    TrainRequest,
    check_resume_request,
    config_options,
    hashed_run_name,
)
from moerl.runs.rundir import RunDir, running, stop_on_signals

FAMILY_NAME = "masked-experts"
#: CLI flag -> config key (MaskedExpertsConfig uses the flags' names).
FLAGS = {name: name for name in ("env", "arch", "mask", "experts", "epochs", "seed", "device", "data_dir")}
MODEL_FILE = "model.pt"
#: The learner's state in a checkpoint folder.
STATE_FILE = "state.pt"


def _matches(env: str) -> bool:
    from moerl.masked.suites import is_suite_name

    return is_suite_name(env)


def _list_envs() -> list[tuple[str, str]]:
    from moerl.masked.suites import VISION_SUITES

    return list(VISION_SUITES.items())


def resolve_config(request: TrainRequest):
    """Merge config file, flags and overrides into a validated :class:`MaskedExpertsConfig`."""
    flags = {FLAGS[k]: v for k, v in request.flags().items() if k in FLAGS}
    cfg, _ = resolve(MaskedExpertsConfig, file=request.config, flags=flags, overrides=request.overrides,
                     aliases=FLAGS)
    return cfg.validate()


def _build_suite(cfg, data_dir: str | None = None):
    from moerl.masked.suites import build_suite

    return build_suite(cfg.env, data_dir if data_dir is not None else cfg.data_dir, seed=cfg.seed,
                       val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, max_train=cfg.max_train,
                       max_val=cfg.max_val, max_test=cfg.max_test)


def train(request: TrainRequest) -> Path:
    """``moerl train``: a new run, or (``--resume RUN_DIR``) the continuation of an interrupted one."""
    import torch

    from moerl.masked.learners import make_learner

    if request.resume:
        return _resume(request)
    cfg = resolve_config(request)
    torch.set_num_threads(cfg.threads)
    console = request.console()
    console.say(f"masked-experts: building {cfg.env} and the {cfg.arch} model ...")
    suite = _build_suite(cfg)
    name = request.run_name or hashed_run_name(
        to_dict(cfg), (cfg.env, cfg.arch, cfg.mask if cfg.arch != "packnet" else "",
                       f"e{cfg.experts}" if cfg.arch != "packnet" else "", cfg.schedule), cfg.seed)
    learner = make_learner(suite, cfg)  # builds the model (e.g. resnet18 weights) before the directory
    run = RunDir.create(request.logdir, name)
    with running(run, FAMILY_NAME, cfg.seed, cfg.device):
        run.write_config(to_dict(cfg))
        _learn(run, learner, console)
        results = _write_results(run, learner, suite, console)
    _drop_checkpoints(run)
    console.summary(summary_lines(results))
    return run.path


def _resume(request: TrainRequest) -> Path:
    """Continue a killed, interrupted or crashed run from its last checkpoint to the end of its config."""
    import torch

    from moerl.masked.learners import make_learner

    check_resume_request(request, {"device": "where to continue"})
    assert request.resume is not None
    run, step = RunDir.open_resumable(request.resume, FAMILY_NAME)
    cfg = from_dict(MaskedExpertsConfig, run.read_config())  # a broken file or key: one-line ConfigError
    if request.option("device") is not None:
        cfg.device = request.option("device")
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    console = request.console()
    console.say(f"masked-experts: building {cfg.env} and the {cfg.arch} model, resuming at epoch {step} ...")
    suite = _build_suite(cfg)
    learner = make_learner(suite, cfg)
    # Loaded on the CPU (random generator states must stay there); the learner moves what it keeps. A file
    # that does not load into this learner is reported in one line as damaged.
    load_checkpoint_file(run.path, STATE_FILE, lambda path: learner.load_state_dict(
        torch.load(path, map_location="cpu", weights_only=True)))
    with running(run, FAMILY_NAME, cfg.seed, cfg.device, resumed_from=step):
        run.write_config(to_dict(cfg))
        _learn(run, learner, console)
        results = _write_results(run, learner, suite, console)
    _drop_checkpoints(run)
    console.summary(summary_lines(results))
    return run.path


def epoch_budget(cfg, n_tasks: int) -> int:
    """The most epochs a run trains over all its phases (early stopping may end a phase sooner)."""
    per_task = cfg.epochs + (cfg.finetune_epochs if cfg.arch == "packnet" else 0)
    return per_task if cfg.schedule == "joint" else per_task * n_tasks


def _learn(run, learner, console: Console) -> None:
    """Train with a checkpoint every ``checkpoint_every`` epochs; the first SIGINT / SIGTERM stops the learner
    at its next epoch end, writes a checkpoint and raises the interruption that ``running`` records.

    The console shows, after every epoch, the phase (a dataset, a fine-tuning stage) and the epoch's training
    loss and accuracy and validation accuracy (the numbers ``history.csv`` keeps)."""

    cfg = learner.config
    every = cfg.checkpoint_every
    console.start(f"{cfg.env} {cfg.arch} s{cfg.seed}", epoch_budget(cfg, len(learner.suite.tasks)), "epoch",
                  initial=learner.epochs_done)

    def on_epoch_end() -> None:
        log = learner.last_epoch_log
        if log is not None:
            console.detail(f"epoch {learner.epochs_done} [{log.phase} {log.epoch + 1}]: train loss {log.train_loss:.4f}"
                           f" | train acc {log.train_acc:.4f} | val acc {log.val_acc:.4f}")
            console.update(learner.epochs_done, {"phase": f"{log.phase} epoch {log.epoch + 1}",
                                                 "loss": f"{log.train_loss:.3f}", "train acc": f"{log.train_acc:.3f}",
                                                 "val acc": f"{log.val_acc:.3f}"})
        if learner.epochs_done % every == 0:
            _save_checkpoint(run, learner)

    learner.tensorboard_log = run.tb_dir
    learner.on_epoch_end = on_epoch_end
    try:
        with stop_on_signals(lambda name: learner.request_stop()) as signals:
            learner.learn()
            if signals.name is not None:  # stopped at an epoch end, or asked to after the last one
                _save_checkpoint(run, learner)
            signals.raise_if_stopped()
    finally:
        learner.on_epoch_end = None
        console.close()


def _save_checkpoint(run, learner) -> None:
    write_checkpoint(run.path, learner.epochs_done, lambda folder: save_torch(learner.state_dict(), folder / STATE_FILE),
                     kind="epoch")


def _drop_checkpoints(run) -> None:
    """A finished run's files hold everything; its checkpoint (model, best weights, optimiser) is dead weight."""

    remove_checkpoints(run.path)


def _write_results(run, learner, suite, console: Console) -> dict[str, Any]:
    console.say("final evaluation on the train, validation and test splits ...")
    results = summarise(learner, suite)
    run.save_atomic(MODEL_FILE, learner.save)
    run.write_json("results.json", results)
    write_history(learner, run.path / "history.csv")
    from moerl.masked.plots import write_plots

    write_plots(run.path, learner, results)
    console.detail(one_line(results))
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The closing table: per dataset, the accuracies results.json holds, with the means beside them."""
    key = results["headline_metric"]
    per = "accuracy" if key == "mean_accuracy" else "accuracy_task_aware"
    seconds = float(results.get("train_seconds") or 0.0)
    head = (f"{results['suite']} {results['arch']}, {results['schedule']}, seed {results['config']['seed']}: "
            f"{results['epochs_run']} epochs in {duration(seconds)}")
    lines = ["", f"== summary: {head}"]
    names = list(results["test"]["datasets"])
    rows: list[list[Any]] = []
    aware = per == "accuracy"  # a task-agnostic headline: the task-aware test accuracy beside it
    for name in names:
        rows.append([name, *(_acc(results[split]["datasets"][name].get(per)) for split in ("train", "val", "test")),
                     *([_acc(results["test"]["datasets"][name].get("accuracy_task_aware"))] if aware else [])])
    rows.append(["mean", *(_acc(results[split][key]) for split in ("train", "val", "test")),
                 *([_acc(results["test"]["mean_accuracy_task_aware"])] if aware else [])])
    label = "task-agnostic" if aware else "task-aware"
    lines += text_table(["dataset", f"train acc ({label})", "val acc", "test acc",
                         *(["test acc (task-aware)"] if aware else [])], rows)
    lines.append(f"train-test gap {results['train_test_gap']:.4f} (train minus test, {key})")
    routing = results["test"].get("routing")
    if routing:
        lines.append(f"routing (test): purity {routing['purity']:.3f}, samples per dataset and expert {routing['counts']}")
    for kind, metrics in (results.get("continual") or {}).items():
        last = metrics["accuracy_matrix"][-1]
        cells = " ".join(f"{n} {_acc(a)}" for n, a in zip(names, last, strict=False))
        parts = [f"average accuracy {metrics['average_accuracy']:.4f} (mean of: {cells})"]
        for k in ("forgetting", "backward_transfer"):
            if k in metrics:
                parts.append(f"{k.replace('_', ' ')} {metrics[k]:.4f}")
        lines.append(f"continual ({kind.replace('_', '-')}): " + " | ".join(parts))
    lines += ["how:",
              "  acc = fraction of a dataset's samples classified right by the final model (best validation epoch)",
              f"  {label}: " + ("the model routes each sample itself; task-aware: the dataset's expert is given"
                                 if per == "accuracy" else "the dataset's expert/head is given"),
              "  mean = mean over datasets of the column above (results.json train/val/test "
              f"{key}" + (", test mean_accuracy_task_aware)" if aware else ")")]
    if results.get("continual"):
        lines += ["  continual: accuracy matrix on test after each dataset; average accuracy = mean of its last row,",
                  "    forgetting = mean over earlier datasets of best earlier row minus last row, backward transfer =",
                  "    mean of last row minus the row right after learning the dataset"]
    return lines


def _acc(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def summarise(learner, suite) -> dict[str, Any]:
    """Train/val/test numbers, train-test gap, routing and continual metrics, sizes, time."""
    out: dict[str, Any] = {"suite": suite.name, "arch": learner.config.arch, "schedule": learner.config.schedule,
                           "sizes": {t.name: t.sizes() for t in suite.tasks}, "notes": suite.notes,
                           "config": to_dict(learner.config)}
    for split in ("train", "val", "test"):
        out[split] = learner.evaluate(split)
    key = "mean_accuracy" if out["test"]["mean_accuracy"] is not None else "mean_accuracy_task_aware"
    out["headline_metric"] = key
    out["train_test_gap"] = out["train"][key] - out["test"][key]
    out["continual"] = learner.continual()
    out["train_seconds"] = learner.train_seconds
    out["epochs_run"] = len(learner.history)
    return out


def one_line(results: dict[str, Any]) -> str:
    key = results["headline_metric"]
    parts = [f"{results['suite']} {results['arch']}: {key} train {results['train'][key]:.3f} "
             f"val {results['val'][key]:.3f} test {results['test'][key]:.3f}"]
    routing = results["test"].get("routing")
    if routing:
        parts.append(f"routing purity {routing['purity']:.3f} counts {routing['counts']}")
    if results.get("continual"):
        ta = results["continual"]["task_aware"]
        parts.append(f"forgetting (task-aware) {ta.get('forgetting', float('nan')):.3f}")
    return "; ".join(parts)


def write_history(learner, path: Path) -> None:
    import pandas as pd

    rows = [{"phase": h.phase, "epoch": h.epoch, "train_loss": h.train_loss, "train_acc": h.train_acc,
             "val_acc": h.val_acc, **h.extra} for h in learner.history]
    pd.DataFrame(rows).to_csv(path, index=False)


def evaluate(run_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from moerl.masked.learners import load_learner

    run = RunDir(run_path)
    cfg = from_dict(MaskedExpertsConfig, run.read_config())
    suite = _build_suite(cfg, options.get("data_dir"))
    device = options.get("device") or cfg.device
    learner = run.load_artifact(MODEL_FILE, lambda path: load_learner(path, suite, device))
    res = learner.evaluate("test")
    return {"run": str(run_path), "mean_accuracy": res["mean_accuracy"],
            "mean_accuracy_task_aware": res["mean_accuracy_task_aware"],
            "datasets": res["datasets"], "routing": res.get("routing")}


FAMILY = Family(
    name=FAMILY_NAME,
    description="masked-expert vision models and PackNet on image suites (seed 000)",
    matches=_matches,
    list_envs=_list_envs,
    train=train,
    evaluate=evaluate,
    options=config_options(MaskedExpertsConfig, {k: v for k, v in FLAGS.items() if k != "env"}, {
        "arch": "masked-moe or packnet",
        "mask": "mask of the masked-expert layers: none, fixed, lu or lowrank",
        "experts": "number of experts",
        "epochs": "training epochs per task",
        "seed": "random seed",
        "device": "cpu, cuda or auto",
        "data_dir": "directory with offline data files",
    }),
    eval_options=frozenset({"device", "data_dir"}),
    resume=train,
)
