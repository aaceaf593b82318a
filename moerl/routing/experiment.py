"""The ``routing`` family: ``moerl train --env mnist-mtl --algo wpl`` and friends (seed 002).

Why here: this module turns a :class:`~moerl.runs.kinds.TrainRequest` into a validated
:class:`RoutingConfig`, and only then creates the run directory and trains a
:class:`~moerl.routing.trainer.RoutingLearner`. Config precedence: dataclass defaults <
``--config FILE`` < explicit CLI flags (``--algo``, ``--epochs``, ``--seed``, ``--data-dir``,
``--device``) < ``--set key=value``.

One schema: :class:`RoutingConfig` *is* the learner's
:class:`~moerl.routing.config.LearnerConfig` plus the keys only a run needs (dataset, epochs,
evaluation cadence); every key is defined once. Names (datasets, algorithms, WPL forms ...) come from
their registries (:data:`moerl.routing.data.DATASETS`, :mod:`moerl.routing.config`). Nothing here
imports torch at module level, so ``moerl --help`` and ``moerl envs`` stay fast.

Run directory files (besides the common skeleton): ``model.pt``, ``eval.csv`` (epoch, task, accuracy),
``results.json`` (final per-task accuracy, accuracy per evaluated epoch, routes), ``routing_map.png``
(task x depth -> chosen block, the paper's Fig. 11; routing algos only) and ``policy_evolution.png``
(per task, how often each block was chosen at each depth in each epoch, the paper's Fig. 9).
``results.json`` and TensorBoard also carry route collisions (``routing/collision_fraction``: the
fraction of task pairs whose greedy routes are identical; ``routing/distinct_routes``;
``routing/collided_tasks`` and ``routing/collided_accuracy``, the mean test accuracy of the tasks that
share a route); ``results.json`` adds the groups of tasks that share a route and ``free_accuracy`` (the
other tasks' mean), final and per evaluated epoch (:data:`COLLISION_KEYS`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moerl.core.checkpoint_store import load_checkpoint_file, remove_checkpoints, save_torch, write_checkpoint
from moerl.core.config import from_dict, resolve, to_dict
from moerl.core.errors import ConfigError, check_positive
from moerl.routing.config import ALGOS, LearnerConfig, check_algo_keys, validate_learner
from moerl.routing.data import DATASETS
from moerl.routing.paper import paper_row
from moerl.runs.console import Console, duration, text_table
from moerl.runs.kinds import (
    Family,
    TrainRequest,
    check_resume_request,
    config_options,
    hashed_run_name,
)
from moerl.runs.rundir import RunDir, running, stop_on_signals

MODEL_FILE = "model.pt"
#: The learner's and the run's state inside a checkpoint folder (see :mod:`moerl.core.checkpoint_store`).
CHECKPOINT_FILE = "state.pt"
#: ``moerl eval`` options the routing family uses (evaluation is deterministic on the whole test split).
EVAL_OPTIONS = ("data_dir", "device")
#: Route-collision measures (:func:`moerl.routing.collisions.route_collisions`) written to
#: ``results.json`` (final, and per evaluated epoch under ``collisions_by_epoch``) and by ``moerl eval``.
COLLISION_KEYS = ("collision_fraction", "distinct_routes", "collision_groups", "collided_tasks",
                  "collided_accuracy", "free_accuracy")


@dataclass
class RoutingConfig(LearnerConfig):
    """Everything a routing run needs: the learner's keys plus the run-only ones below.

    ``config.yaml`` of a run is this, resolved (one flat mapping, as the shipped configs are written).
    """

    env: str = "mnist-mtl"
    epochs: int = 10
    data_dir: str | None = None
    data_seed: int = 0
    eval_every: int = 1  # evaluate on the test split every N epochs (and after the last)
    checkpoint_every: int = 1  # write a checkpoint every N epochs (and on SIGINT / SIGTERM, mid-epoch)


def validate(cfg: RoutingConfig) -> RoutingConfig:
    """Raise :class:`ConfigError` (one line) for any bad value; return ``cfg`` otherwise."""
    DATASETS.check(cfg.env)
    validate_learner(cfg)
    for name in ("epochs", "eval_every", "checkpoint_every"):
        check_positive(name, getattr(cfg, name))
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().is_dir():
        raise ConfigError(f"data directory '{cfg.data_dir}' does not exist")
    return cfg


#: CLI flag -> config key (the routing schema is flat and uses the flags' names).
FLAGS = {name: name for name in ("env", "algo", "epochs", "seed", "data_dir", "device")}


def resolve_config(request: TrainRequest) -> RoutingConfig:
    """Defaults < --config < CLI flags < --set, through the one config pipeline; validated."""
    flags = {FLAGS[k]: v for k, v in request.flags().items() if k in FLAGS}
    cfg, given = resolve(RoutingConfig, file=request.config, flags=flags, overrides=request.overrides, aliases=FLAGS)
    validate(cfg)
    check_algo_keys(cfg.algo, given)
    return cfg


def _plot_routing_map(run: RunDir, route_counts: np.ndarray, task_names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = route_counts.argmax(2)  # (tasks, depths)
    share = route_counts.max(2) / np.maximum(route_counts.sum(2), 1)
    n_tasks, n_depths = chosen.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n_tasks, 1.2 + 0.8 * n_depths))
    ax.imshow(chosen.T, cmap="tab10", vmin=0, vmax=9, aspect="auto")
    for t in range(n_tasks):
        for d in range(n_depths):
            ax.text(t, d, f"{chosen[t, d]}\n{share[t, d]:.0%}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(n_tasks), [n[:10] for n in task_names], rotation=60, fontsize=7)
    ax.set_yticks(range(n_depths), [f"depth {d}" for d in range(n_depths)])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(run.path / "routing_map.png", dpi=100)
    plt.close(fig)


def _plot_policy_evolution(run: RunDir, history: np.ndarray, task_names: list[str]) -> None:
    """history: (epochs, tasks, depths, actions) choice frequencies during training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_ep, n_tasks, n_depths, n_act = history.shape
    cols = min(n_tasks, 5)
    rows = (n_tasks + cols - 1) // cols
    fig, axes = plt.subplots(rows * n_depths, cols, figsize=(2.4 * cols, 1.4 * rows * n_depths), squeeze=False)
    epochs = np.arange(1, n_ep + 1)
    for t in range(n_tasks):
        for d in range(n_depths):
            ax = axes[(t // cols) * n_depths + d, t % cols]
            ax.stackplot(epochs, history[:, t, d, :].T, colors=[f"C{a % 10}" for a in range(n_act)])
            ax.set_ylim(0, 1)
            ax.set_title(f"{task_names[t][:12]} d{d}", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle("Block choice frequency per epoch (colour = block)", fontsize=9)
    fig.tight_layout()
    fig.savefig(run.path / "policy_evolution.png", dpi=90)
    plt.close(fig)


def train(request: TrainRequest) -> Path:
    """Validate, build the data (errors before any directory exists), then train and write the run.

    With ``request.resume``: continue that run from its checkpoint instead (:func:`_resume`).
    """
    if request.resume:
        return _resume(request)
    cfg = resolve_config(request)
    from moerl.routing.data import build

    console = request.console()
    console.say(f"routing: building {cfg.env} and the {cfg.algo} model ...")
    dataset = build(cfg.env, data_dir=cfg.data_dir, seed=cfg.data_seed)
    name = request.run_name or hashed_run_name(to_dict(cfg), (cfg.env, cfg.algo), cfg.seed)
    run = RunDir.create(request.logdir, name)
    with running(run, "routing", cfg.seed, cfg.device):
        run.write_config(to_dict(cfg))
        results = _RoutingRun(run, cfg, dataset).train(console)
    remove_checkpoints(run.path)
    console.summary(summary_lines(results))
    return run.path


def _resume(request: TrainRequest) -> Path:
    """Continue a killed, interrupted or crashed routing run from its checkpoint (``--epochs``: a new total)."""
    import torch

    from moerl.routing.data import build

    check_resume_request(request, {"epochs": "a new total", "device": "where to continue"})
    assert request.resume is not None
    run, epoch = RunDir.open_resumable(request.resume, FAMILY.name)
    cfg = validate(from_dict(RoutingConfig, run.read_config()))
    epochs, device = request.option("epochs"), request.option("device")
    if epochs is not None:
        if epochs < epoch:
            raise ConfigError(f"--epochs {epochs} is below the checkpoint's epoch {epoch}")
        cfg.epochs = epochs
    if device is not None:
        cfg = validate(dataclasses.replace(cfg, device=device))
    console = request.console()
    console.say(f"routing: building {cfg.env} and the {cfg.algo} model, resuming at epoch {epoch} ...")
    dataset = build(cfg.env, data_dir=cfg.data_dir, seed=cfg.data_seed)
    # Built from the checkpoint before anything is written (it writes nothing itself): a file that does not
    # load, or does not load into this learner, is one line naming it and leaves the run as it was.
    routing_run = load_checkpoint_file(run.path, CHECKPOINT_FILE, lambda path: _RoutingRun(
        run, cfg, dataset, torch.load(path, weights_only=False, map_location="cpu")))
    with running(run, "routing", cfg.seed, cfg.device, resumed_from=epoch):
        run.write_config(to_dict(cfg))
        results = routing_run.train(console)
    remove_checkpoints(run.path)
    console.summary(summary_lines(results))
    return run.path


class _RoutingRun:
    """One routing run: the learner, what its files gather epoch by epoch, checkpoints and a clean stop.

    What the run's files are made of (evaluation rows, accuracy per epoch, block-choice history, route
    collisions) is kept here and saved in each checkpoint with the learner's
    :meth:`~moerl.routing.trainer.RoutingLearner.state_dict`, so a resumed run writes the same
    ``eval.csv``, ``results.json``, plots and TensorBoard curves as one that never stopped (only
    ``train_seconds`` differs: it sums the time of the processes that trained).
    """

    def __init__(self, run: RunDir, cfg: RoutingConfig, dataset: Any, resume: dict[str, Any] | None = None):
        import torch

        from moerl.routing.trainer import RoutingLearner

        torch.set_num_threads(1)
        self.run, self.cfg, self.dataset = run, cfg, dataset
        self.learner = RoutingLearner(dataset, cfg)
        self.rows: list[dict[str, Any]] = []
        self.acc_by_epoch: dict[int, float] = {}
        self.history: list[np.ndarray] = []
        self.collisions: dict[int, dict[str, float]] = {}
        self.seconds = 0.0
        self.purge_step: int | None = None
        if resume is not None:
            self.learner.load_state_dict(resume["learner"])
            for key in ("rows", "acc_by_epoch", "history", "collisions", "seconds"):
                setattr(self, key, resume["run"][key])
            # Events the killed process wrote after the checkpoint's epoch are superseded.
            self.purge_step = self.learner.epoch + 1

    def _checkpoint(self) -> None:
        state = {"learner": self.learner.state_dict(),
                 "run": {"rows": self.rows, "acc_by_epoch": self.acc_by_epoch, "history": self.history,
                         "collisions": self.collisions, "seconds": self.seconds + time.perf_counter() - self._t0}}
        write_checkpoint(self.run.path, self.learner.epoch, lambda folder: save_torch(state, folder / CHECKPOINT_FILE),
                         kind="epoch")

    def train(self, console: Console) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter


        cfg, learner = self.cfg, self.learner
        self.console = console
        self._fields: dict[str, str] = {}
        per_epoch = learner.batches_per_epoch
        self.writer = SummaryWriter(str(self.run.tb_dir), purge_step=self.purge_step)
        self._t0 = time.perf_counter()
        console.start(f"{cfg.env} {cfg.algo} s{cfg.seed}", cfg.epochs * per_epoch, "batch",
                      initial=learner.epoch * per_epoch)

        def on_batch(b: int) -> None:
            console.update(learner.epoch * per_epoch + b + 1, {"epoch": f"{learner.epoch + 1}/{cfg.epochs}",
                                                               **self._fields})

        try:
            with stop_on_signals(lambda name: learner.request_stop()) as signals:
                learner.learn(cfg.epochs - learner.epoch, callback=self._on_epoch, on_batch=on_batch)
                if learner.stopped:
                    self.writer.close()
                    self._checkpoint()
                signals.raise_if_stopped()
        finally:
            console.close()
        self.writer.close()
        self.seconds += time.perf_counter() - self._t0
        console.say("final evaluation on the test split ...")
        return self._finish()

    def _on_epoch(self, epoch: int, lr: Any, stats: dict[str, float]) -> None:
        cfg, dataset, writer = self.cfg, self.dataset, self.writer
        writer.add_scalar("train/loss", stats["loss"], epoch)
        writer.add_scalar("train/lr", lr.current_lr(), epoch)
        if lr.is_routing:
            freq = lr.choice_counts / np.maximum(lr.choice_counts.sum(2, keepdims=True), 1)
            self.history.append(freq)
            for t in range(dataset.n_tasks):
                for d in range(freq.shape[1]):
                    writer.add_scalar(f"routing/task{t}_depth{d}_top_block", int(freq[t, d].argmax()), epoch)
                    writer.add_scalar(f"routing/task{t}_depth{d}_top_share", float(freq[t, d].max()), epoch)
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            ev = lr.evaluate("test")
            self.acc_by_epoch[epoch] = ev["accuracy"]
            writer.add_scalar("test/accuracy_mean", ev["accuracy"], epoch)
            for t, acc in enumerate(ev["per_task"]):
                writer.add_scalar(f"test/accuracy_task{t}", acc, epoch)
                self.rows.append({"epoch": epoch, "task": t, "task_name": dataset.task_names[t], "accuracy": acc})
            if "task_routes" in ev:
                routes = ev["task_routes"]
                writer.add_text("routing/greedy_routes", "  \n".join(
                    f"{dataset.task_names[t]}: {routes[t]}" for t in range(dataset.n_tasks)), epoch)
                writer.add_scalar("routing/collision_fraction", ev["collision_fraction"], epoch)
                writer.add_scalar("routing/distinct_routes", ev["distinct_routes"], epoch)
                writer.add_scalar("routing/collided_tasks", ev["collided_tasks"], epoch)
                if ev["collided_accuracy"] is not None:
                    writer.add_scalar("routing/collided_accuracy", ev["collided_accuracy"], epoch)
                self.collisions[epoch] = {k: ev[k] for k in COLLISION_KEYS}
        self._show_epoch(epoch, stats["loss"])
        if epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
            writer.flush()  # the events up to this epoch are on disk before the checkpoint that covers them
            self._checkpoint()

    def _show_epoch(self, epoch: int, loss: float) -> None:
        """The console's quantities after an epoch: its mean training loss and the latest test accuracy."""
        self._fields = {"loss": f"{loss:.3f}"}
        if self.acc_by_epoch:
            at = max(self.acc_by_epoch)
            accs = [r["accuracy"] for r in self.rows if r["epoch"] == at]
            self._fields[f"test acc@{at}"] = (f"{self.acc_by_epoch[at]:.3f} (tasks {min(accs):.2f}-{max(accs):.2f})")
            if at == epoch:
                names = self.dataset.task_names
                self.console.detail(f"epoch {epoch}: train loss {loss:.4f} | test accuracy mean "
                                    f"{self.acc_by_epoch[at]:.4f} | " + " ".join(
                                        f"{names[r['task']]} {r['accuracy']:.3f}" for r in self.rows
                                        if r["epoch"] == at))
        self.console.update(epoch * self.learner.batches_per_epoch,
                            {"epoch": f"{epoch}/{self.cfg.epochs}", **self._fields})

    def _finish(self) -> dict[str, Any]:
        run, cfg, dataset, learner = self.run, self.cfg, self.dataset, self.learner
        run.save_atomic(MODEL_FILE, learner.save)
        final = learner.evaluate("test")
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=["epoch", "task", "task_name", "accuracy"])
        writer.writeheader()
        writer.writerows(self.rows)
        run.write_text("eval.csv", table.getvalue())
        results = {
            "family": "routing", "env": cfg.env, "algo": cfg.algo, "seed": cfg.seed, "epochs": cfg.epochs,
            "dataset": dataset.summary(), "test_accuracy": final["accuracy"],
            "test_accuracy_per_task": final["per_task"], "task_names": dataset.task_names,
            "accuracy_by_epoch": self.acc_by_epoch, "train_seconds": round(self.seconds, 2),
        }
        if learner.is_routing:
            counts = np.asarray(final["route_counts"])
            results["greedy_routes"] = counts.argmax(2).tolist()  # per depth, the most used block
            results["task_routes"] = final["task_routes"]  # per task, the most used full route
            results["route_counts"] = final["route_counts"]
            results.update({k: final[k] for k in COLLISION_KEYS})
            results["collisions_by_epoch"] = self.collisions
            _plot_routing_map(run, counts, dataset.task_names,
                              f"{cfg.algo} on {cfg.env}: greedy block per task/depth")
            if self.history:
                _plot_policy_evolution(run, np.stack(self.history), dataset.task_names)
        run.write_json("results.json", results)
        return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The closing table: final test accuracy per task (results.json ``test_accuracy_per_task``) and its mean."""
    names, accs = results["task_names"], results["test_accuracy_per_task"]
    head = (f"{results['env']} {results['algo']}, seed {results['seed']}: {results['epochs']} epochs in "
            f"{duration(float(results['train_seconds']))}")
    lines = ["", f"== summary: {head}"]
    lines += text_table(["task", "test accuracy"], [[n, f"{a:.4f}"] for n, a in zip(names, accs, strict=True)])
    lines.append(f"mean test accuracy {results['test_accuracy']:.4f}")
    if "collision_fraction" in results:
        lines.append(f"routing: {int(results['distinct_routes'])} distinct greedy routes over {len(names)} tasks, "
                     f"collision fraction {results['collision_fraction']:.3f}")
    lines += ["how:",
              "  test accuracy = fraction of a task's test samples classified right after training"
              + (", greedy routes" if "collision_fraction" in results else ""),
              "  mean = mean over tasks of the column above (results.json test_accuracy)"]
    if "collision_fraction" in results:
        lines.append("  collision fraction = share of task pairs whose most frequent greedy routes are identical")
    return lines


def evaluate(run_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Reload ``model.pt`` of a finished run and return its per-task test accuracy.

    Takes ``data_dir`` and ``device`` only (:data:`EVAL_OPTIONS`); the CLI refuses any other option
    (``--episodes``, ``--seed``: RL evaluation knobs), since the whole test split is evaluated
    deterministically.
    """
    import torch

    from moerl.routing.data import build
    from moerl.routing.trainer import RoutingLearner

    torch.set_num_threads(1)
    run = RunDir(run_path)
    cfg = from_dict(RoutingConfig, run.read_config())
    if "device" in options:
        cfg = dataclasses.replace(cfg, device=options["device"])
    data_dir = options.get("data_dir", cfg.data_dir)
    dataset = build(cfg.env, data_dir=data_dir, seed=cfg.data_seed)
    learner = run.load_artifact(MODEL_FILE, lambda path: RoutingLearner.load(path, dataset, device=cfg.device))
    ev = learner.evaluate("test")
    out = {"env": cfg.env, "algo": cfg.algo, "test_accuracy": ev["accuracy"],
           "test_accuracy_per_task": dict(zip(dataset.task_names, ev["per_task"], strict=True))}
    if "task_routes" in ev:
        out.update(task_routes=ev["task_routes"], **{k: ev[k] for k in COLLISION_KEYS})
    return out


FAMILY = Family(
    name="routing",
    description="routing networks (Rosenbaum et al. 2018) and MTL baselines on multi-task image datasets",
    matches=lambda env: env in DATASETS,
    list_envs=lambda: list(DATASETS.items()),
    train=train,
    evaluate=evaluate,
    options=config_options(RoutingConfig, {k: v for k, v in FLAGS.items() if k != "env"}, {
        "algo": f"a router or a baseline ({ALGOS.help()})",
        "epochs": "training epochs",
        "seed": "random seed",
        "data_dir": "directory with offline data files",
        "device": "cpu, cuda or auto",
    }),
    eval_options=frozenset(EVAL_OPTIONS),
    resume=train,
    paper_row=lambda config: paper_row(str(config.get("env")), str(config.get("algo")),
                                       str(config.get("mode", "layered"))),
)
