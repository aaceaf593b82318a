"""``moerl train --env <vision suite>``: masked-expert models and PackNet (seed 000).

Config resolution: defaults of :class:`MaskedExpertsConfig` <- ``--config FILE`` <- CLI flags
(``--arch --mask --experts --epochs --seed --device --data-dir``) <- ``--set key=value``. Everything is
validated (and the data loaded) before the run directory is created, so bad input leaves nothing behind.

Run directory: ``config.yaml``, ``status.json``, ``tb/`` (TensorBoard), ``results.json`` (train/val/test
numbers, train-test gap, routing, continual metrics), ``model.pt``, ``history.csv`` and PNG plots
(``learning_curves.png``, ``routing.png``, ``mask_density.png``).

Checkpoints and resume: every ``checkpoint_every`` epochs (counted over all phases) and on the first SIGINT /
SIGTERM (the learner stops at the end of the epoch it is in; a second signal interrupts at once) the
learner's whole :meth:`state_dict` goes to ``checkpoints/epoch-N/state.pt`` (:mod:`moerl.checkpoint_store`:
atomic, ``checkpoint.json`` points at it). ``moerl train --resume RUN_DIR [--device D]`` rebuilds the data
and the learner from the run's ``config.yaml``, loads the checkpoint and trains on; TensorBoard events the
killed process wrote after the checkpoint are purged. The finished run's files are those of an
uninterrupted run bit for bit (``train_seconds`` aside: it adds the time of every process; on the same
device), and its checkpoint is removed, as a run that was never cut keeps none either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moerl.config import resolve, to_dict
from moerl.experiments.families import (
    Family,
    TrainRequest,
    check_resume_request,
    hashed_run_name,
    reject_unused,
)

FAMILY_NAME = "masked-experts"
#: CLI flag -> config key (MaskedExpertsConfig uses the flags' names).
FLAGS = {name: name for name in ("env", "arch", "mask", "experts", "epochs", "seed", "device", "data_dir")}
MODEL_FILE = "model.pt"
#: The learner's state in a checkpoint folder.
STATE_FILE = "state.pt"


def _matches(env: str) -> bool:
    from moerl.data.vision_suites import is_suite_name

    return is_suite_name(env)


def _list_envs() -> list[tuple[str, str]]:
    from moerl.data.vision_suites import VISION_SUITES

    return list(VISION_SUITES.items())


def resolve_config(request: TrainRequest):
    """Merge config file, flags and overrides into a validated :class:`MaskedExpertsConfig`."""
    from moerl.agents.vision_config import MaskedExpertsConfig

    flags = {FLAGS[k]: v for k, v in request.flags().items() if k in FLAGS}
    cfg, _ = resolve(MaskedExpertsConfig, file=request.config, flags=flags, overrides=request.overrides,
                     aliases=FLAGS)
    return cfg.validate()


def _build_suite(cfg, data_dir: str | None = None):
    from moerl.data.vision_suites import build_suite

    return build_suite(cfg.env, data_dir if data_dir is not None else cfg.data_dir, seed=cfg.seed,
                       val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, max_train=cfg.max_train,
                       max_val=cfg.max_val, max_test=cfg.max_test)


def train(request: TrainRequest) -> Path:
    """``moerl train``: a new run, or (``--resume RUN_DIR``) the continuation of an interrupted one."""
    import torch

    from moerl.agents.vision_learners import make_learner
    from moerl.experiments.rundir import RunDir, running

    if request.resume:
        return _resume(request)
    fam = FAMILY
    reject_unused(request, fam)
    cfg = resolve_config(request)
    torch.set_num_threads(cfg.threads)
    suite = _build_suite(cfg)
    name = request.run_name or hashed_run_name(
        to_dict(cfg), (cfg.env, cfg.arch, cfg.mask if cfg.arch != "packnet" else "",
                       f"e{cfg.experts}" if cfg.arch != "packnet" else "", cfg.schedule), cfg.seed)
    learner = make_learner(suite, cfg)  # builds the model (e.g. resnet18 weights) before the directory
    run = RunDir.create(request.logdir, name)
    with running(run, FAMILY_NAME, cfg.seed, cfg.device):
        run.write_config(to_dict(cfg))
        _learn(run, learner)
        _write_results(run, learner, suite, request.progress)
    _drop_checkpoints(run)
    return run.path


def _resume(request: TrainRequest) -> Path:
    """Continue a killed, interrupted or crashed run from its last checkpoint to the end of its config."""
    import torch

    from moerl.agents.vision_config import MaskedExpertsConfig
    from moerl.agents.vision_learners import make_learner
    from moerl.checkpoint_store import checkpoint_folder
    from moerl.config import from_dict
    from moerl.experiments.rundir import RunDir, running

    check_resume_request(request, {"device": "where to continue"})
    assert request.resume is not None
    run, step = RunDir.open_resumable(request.resume, FAMILY_NAME)
    cfg = from_dict(MaskedExpertsConfig, run.read_config())  # a broken file or key: one-line ConfigError
    if request.device is not None:
        cfg.device = request.device
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    suite = _build_suite(cfg)
    learner = make_learner(suite, cfg)
    state_file = (checkpoint_folder(run.path) / STATE_FILE).relative_to(run.path)
    # Loaded on the CPU (random generator states must stay there); the learner moves what it keeps. A file
    # that does not load into this learner is reported in one line as damaged.
    run.load_artifact(str(state_file), lambda path: learner.load_state_dict(
        torch.load(path, map_location="cpu", weights_only=True)))
    with running(run, FAMILY_NAME, cfg.seed, cfg.device):
        run.write_status("running", resumed_from=step)
        run.write_config(to_dict(cfg))
        _learn(run, learner)
        _write_results(run, learner, suite, request.progress)
    _drop_checkpoints(run)
    return run.path


def _learn(run, learner) -> None:
    """Train with a checkpoint every ``checkpoint_every`` epochs; the first SIGINT / SIGTERM stops the learner
    at its next epoch end, writes a checkpoint and raises the interruption that ``running`` records."""
    from moerl.experiments.rundir import stop_on_signals

    every = learner.config.checkpoint_every

    def on_epoch_end() -> None:
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


def _save_checkpoint(run, learner) -> None:
    import torch

    from moerl.checkpoint_store import write_checkpoint

    write_checkpoint(run.path, learner.epochs_done, lambda folder: torch.save(learner.state_dict(), folder / STATE_FILE),
                     kind="epoch")


def _drop_checkpoints(run) -> None:
    """A finished run's files hold everything; its checkpoint (model, best weights, optimiser) is dead weight."""
    from moerl.checkpoint_store import remove_checkpoints

    remove_checkpoints(run.path)


def _write_results(run, learner, suite, progress: bool) -> None:
    results = summarise(learner, suite)
    run.save_atomic(MODEL_FILE, learner.save)
    run.write_json("results.json", results)
    write_history(learner, run.path / "history.csv")
    from moerl.experiments.vision_plots import write_plots

    write_plots(run.path, learner, results)
    if progress:
        print(one_line(results))


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
    from moerl.agents.vision_config import MaskedExpertsConfig
    from moerl.agents.vision_learners import load_learner
    from moerl.config import from_dict
    from moerl.experiments.rundir import RunDir

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
    flags=FLAGS,
    eval_options=frozenset({"device", "data_dir"}),
    resume=train,
)
