"""``moerl train --seeds 0-9 --engine batched``: many seeds of one MoE-DQN or MoE-PPO config, trained together; and
batches whose members are runs of several configs of one architecture (:func:`train_members`: a sweep's
settings, e.g. task orders, fixed tasks, block lengths, replay capacities, that the engine holds per member).

Why a module beside :mod:`moerl.rl.experiment`: the batched engine
(:class:`~moerl.rl.engine.batched_dqn.BatchedDQN`) trains S seeds in one process, but its results must
land exactly where and as the SB3 path's do, one run directory per seed, so that ``moerl eval``,
``moerl report`` and everything downstream cannot tell the engines apart:

* ``config.yaml`` (the run's config with its own ``seed`` and ``engine: batched``), ``status.json``;
* ``eval.csv``: greedy per-task evaluation every ``eval.freq`` steps, at the start and at the end (rows:
  step, task, mean_return, std_return, normalized, episodes), the SB3 path's columns;
* ``eval_usage.csv`` (networks with a router): per evaluation, task, layer and expert, the mean router usage
  on that task's evaluation observations; ``metrics.csv``: the ``moe/*`` scalars (step, key, value), as the
  SB3 path writes them (:mod:`moerl.rl.sb3.callbacks`);
* TensorBoard: ``eval/return/<task>``, ``eval/normalized/<task>``, ``eval/normalized_mean``,
  ``eval_usage/<task>/<layer>/expert<e>``, ``train/loss``, ``train/aux_loss``, ``train/return/<task>``
  (training episodes) and ``moe/*``, with the SB3 path's custom-scalars layout and task-schedule series
  (:mod:`moerl.rl.tb_layout`);
* ``model.zip``: the seed's network in an SB3 ``MoEDQN`` zip (``MoEDQN.load`` reads it);
* ``results.json`` (final evaluation over ``eval.final_episodes``, continual metrics) and ``schedule.json``.

The algorithm's side (its engine, its member settings, budgets, checkpoint interval, training scalars and
model zip) comes from its adapter in :mod:`moerl.rl.batch_engines`; for PPO (``BatchedPPO``), ``model.zip`` is
a ``MoEPPO`` zip, the training scalars are PPO's ``train/*`` diagnostics, and evaluations and checkpoints fall
on rollout boundaries (the first at or after each multiple of ``eval.freq``; see docs/moe-ppo.md).

Checkpoints, signals and ``--resume`` work for a batch as for one run (see :class:`_Batch`). MoE metrics
(``moe/dormant/...``, ``moe/router/...``) are measured every ``logging.metrics_interval`` env steps on a
training minibatch, as on the SB3 path, and written at the next evaluation with the step they were taken at.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from moerl.core.checkpoint_store import load_checkpoint_file, remove_checkpoints, save_torch, write_checkpoint
from moerl.core.config import from_dict, to_dict
from moerl.core.errors import ConfigError
from moerl.core.threads import TRAINING_THREADS
from moerl.rl.batch_engines import PLAIN_IDS, engine_of, suite_spec, task_names
from moerl.rl.record import (
    eval_row,
    eval_scalars,
    final_eval_entry,
    moe_tag,
    run_results,
    schedule_record,
    train_return_tag,
    usage_rows,
    usage_scalars,
    write_tables,
)
from moerl.runs.console import Console
from moerl.runs.kinds import NOT_IN_ID_AT_DEFAULT, check_resume_request
from moerl.runs.rundir import RunDir, check_run_name, resume_status, run_state, running_many, stop_on_signals

#: Env steps between two updates of the progress view (learn() is called in chunks of at most this many).
PROGRESS_STEPS = 1000
_PLAIN_IDS = PLAIN_IDS


def resolve_engine(config: Any, num_seeds: int) -> str:
    """The engine ``auto`` means for ``num_seeds`` seeds of this config: the batched engine when it runs the
    env and there are at least two seeds (one seed alone is faster on the SB3 path: benchmarks/), else sb3."""
    if config.engine != "auto":
        return config.engine
    if num_seeds < 2:
        return "sb3"
    from moerl.rl.config import resolve_env

    try:
        suite_spec(resolve_env(config.env), config.env_kwargs)
    except ConfigError:
        return "sb3"
    return "batched"


class _SeedRun:
    """One seed's run directory while the batch trains: TensorBoard writer and evaluation rows."""

    def __init__(self, run: Any, seed: int, purge_step: int | None = None, done: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run, self.seed = run, seed
        #: A member a resumed batch holds that finished before (at its own budget) in the process that wrote
        #: the checkpoint: it trains on in the batch to its budget (so the others compute exactly as they did)
        #: and leaves it then; its files are never touched (no writer, no rows written).
        self.done = done
        self.writer: Any = None if done else SummaryWriter(str(run.tb_dir), purge_step=purge_step)
        self.rows: list[dict[str, Any]] = []
        self.usage: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []


#: Checkpoint file of a batch, in its first seed's run directory (see :class:`_Batch`).
CHECKPOINT_FILE = "batch.pt"


class _Batch:
    """The training loop of a batch of seeds: evaluations, checkpoints, a clean stop on SIGINT / SIGTERM.

    The batch's checkpoint (every ``checkpoint.every`` env steps and on the first signal) lives in the first
    seed's run directory (the *leader*); every member's ``status.json`` names the leader and the members, so
    ``moerl train --resume`` on any of them continues the whole batch. A resumed batch gives the same files
    as an uninterrupted one (tested), TensorBoard included (events after the checkpoint's last evaluation are
    purged and written again). Members with budgets of their own are written out at them and leave the batch
    (:meth:`finish_members`); the checkpoint names the members it holds (``members``).
    """

    def __init__(self, configs: list[Any], seeds: list[int], runs: list[Any], resume: dict[str, Any] | None = None,
                 done: frozenset[str] = frozenset(), batch_size: int | None = None):
        import torch

        from moerl.rl.config import engine_device, resolve_env
        from moerl.rl.tb_layout import TaskSchedule, return_scale

        #: The algorithm's side of the batch (:mod:`moerl.rl.batch_engines`).
        self.engine = engine_of(configs[0])
        check_member_configs(configs)
        if max(c.timesteps for c in configs) != configs[0].timesteps:
            raise ValueError("the first member (the leader, holding the checkpoint) must have the largest budget")
        self.compiled = configs[0].compile == "on"
        self.configs, self.seeds, self.runs = configs, seeds, runs
        #: The settings every member shares (evaluation and checkpoint cadence, network, device), and the
        #: batch's budget: the leader's, the largest (members may have budgets of their own: they leave the
        #: batch when they reach them, :meth:`finish_members`).
        self.config = config = configs[0]
        #: Members that trained in the batch from its start (``seeds_in_batch`` in their results.json).
        self.batch_size = batch_size or len(seeds)
        #: Budgets of the members that left the batch (for the env steps the process took).
        self.left: list[int] = []
        #: Called with a member's run once its files are written (``RunningRuns.finish``: marks it finished).
        self.release: Callable[[Any], None] | None = None
        #: Every member finished by this process, in the order they were written: (seed run, results.json).
        self.finished: list[tuple[_SeedRun, dict[str, Any]]] = []
        self.env_ids = [resolve_env(c.env) for c in configs]
        self.env_id = self.env_ids[0]
        self.specs = [suite_spec(env_id, c.env_kwargs) for env_id, c in zip(self.env_ids, configs, strict=True)]
        self.spec = self.specs[0]
        # Every task evaluated in one batch (BatchedDQN.evaluate's ``tasks``); a plain env is its own task.
        self.eval_suites = [spec if env_id in _PLAIN_IDS else
                            suite_spec(env_id, {k: v for k, v in c.env_kwargs.items() if k != "fixed_task"})
                            for spec, env_id, c in zip(self.specs, self.env_ids, configs, strict=True)]
        self.eval_names = task_names(self.env_id, self.spec)
        # Return bounds (normalised returns, continual metrics) for moerl's suites only, as on the SB3 path.
        self.member_bounds = [{} if env_id in _PLAIN_IDS else
                              {name: tuple(spec.return_bounds[i]) for i, name in enumerate(spec.task_names)}
                              for spec, env_id in zip(self.specs, self.env_ids, strict=True)]
        self.bounds = self.member_bounds[0]
        # The task-schedule series on each member's TensorBoard charts.
        self.schedules = [TaskSchedule(spec.schedule(), spec.task_names, return_scale(bounds)) if bounds else None
                          for spec, bounds in zip(self.specs, self.member_bounds, strict=True)]
        torch.set_num_threads(TRAINING_THREADS)
        self.agent = self.engine.build(configs, self.specs, seeds, engine_device(config), self.compiled)
        self.last_eval = -1
        self.seconds = 0.0
        self.view: Any = None  # the console's progress view (set by train)
        purge = None
        if resume is not None:
            self.agent.load_state_dict(resume["agent"])
            self.last_eval, self.seconds = int(resume["last_eval"]), float(resume["seconds"])
            # Every TensorBoard event of a batch is written at an evaluation, with a step in (previous
            # evaluation, this one] (the schedule's jumps and the MoE metrics lie behind it): so the events
            # to drop are all those after the checkpoint's last evaluation, not only those after its step.
            purge = self.last_eval + 1
        self.seed_runs = [_SeedRun(run, seed, purge, run.path.name in done)
                          for run, seed in zip(runs, seeds, strict=True)] if runs else []
        if resume is not None:
            # A checkpoint from before eval_usage.csv and metrics.csv existed has no such rows: they start anew.
            n = len(self.seed_runs)
            for sr, rows, usage, metrics in zip(self.seed_runs, resume["rows"], resume.get("usage", [[]] * n),
                                                resume.get("metrics", [[]] * n), strict=True):
                sr.rows, sr.usage, sr.metrics = _renamed(rows, self.env_id), _renamed(usage, self.env_id), metrics
                if not sr.done:
                    _write_eval_csv(sr)

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate_tasks(self, episodes: int, seed: int, usage: dict[str, dict[str, np.ndarray]] | None = None
                       ) -> dict[str, np.ndarray]:
        """Greedy returns ``{task: (S, episodes)}`` of every task, all in one batch; ``usage`` (when given) is
        filled with ``{task: {layer: (S, E)}}``."""
        layers: dict[str, np.ndarray] | None = None if usage is None else {}
        returns = self.agent.evaluate(self.eval_suites, episodes, seed, usage=layers,
                                      tasks=list(range(len(self.eval_names))))  # (S, tasks, episodes)
        if usage is not None and layers is not None:
            usage.update({name: {layer: u[:, k] for layer, u in layers.items()}
                          for k, name in enumerate(self.eval_names)})
        return {name: returns[:, k] for k, name in enumerate(self.eval_names)}

    def evaluate(self, step: int, episodes: int) -> None:
        """Greedy returns on every task, as the SB3 path's PerTaskEvalCallback: eval.csv rows and TensorBoard."""
        from moerl.rl.envs.attributes import normalized_return
        from moerl.rl.tb_layout import layout, usage_layers, write_schedule

        config, agent = self.config, self.agent
        usage: dict[str, dict[str, np.ndarray]] = {}
        out = self.evaluate_tasks(episodes, config.seed + 10_000 + step, usage)
        log = agent.pop_log()
        previous, self.last_eval = self.last_eval, step
        if self.view is not None:
            self.view.popped()
            self.view.evaluated(step, out, self.bounds, log.metrics)
            self.view.show(step)
        for i, sr in enumerate(self.seed_runs):
            if sr.done:
                continue
            rows, bounds, schedule = [], self.member_bounds[i], self.schedules[i]
            for name, returns in out.items():
                mean = float(returns[i].mean())
                rows.append(eval_row(step, name, mean, float(returns[i].std()),
                                     normalized_return(mean, bounds[name]) if name in bounds else None,
                                     episodes))
            sr.rows.extend(rows)
            for tag, value in eval_scalars(rows):
                sr.writer.add_scalar(tag, value, step)
            for tag, value, at in self.engine.train_scalars(log, i, step, self.configs[i]):
                sr.writer.add_scalar(tag, value, at)
            per_task: dict[int, list[float]] = {}
            for _, done, task, ret, _length in log.episodes:  # (S,), or (S, N) with environments per seed
                ended = np.atleast_1d(done[i])
                for t, r in zip(np.atleast_1d(task[i])[ended], np.atleast_1d(ret[i])[ended], strict=True):
                    per_task.setdefault(int(t), []).append(float(r))
            for t, rets in per_task.items():
                sr.writer.add_scalar(train_return_tag(self.eval_names[t]), float(np.mean(rets)), step)
            for at, metrics in log.metrics:  # the SB3 path's moe/* tags, at the step they were measured
                for key, values in metrics.items():
                    sr.writer.add_scalar(moe_tag(key), float(values[i]), at)
                    sr.metrics.append({"step": at, "key": moe_tag(key), "value": float(values[i])})
            used = [row for name, layers in usage.items()
                    for row in usage_rows(step, name, {f"router/{layer}/usage_expert{e}": float(u)
                                                       for layer, per_seed in layers.items()
                                                       for e, u in enumerate(per_seed[i])})]
            usage_tags = []
            for tag, value in usage_scalars(used):
                usage_tags.append(tag)
                sr.writer.add_scalar(tag, value, step)
            sr.usage.extend(used)
            if previous < 0:  # the custom-scalars layout once, at the run's first evaluation
                sr.writer.add_custom_scalars(layout(list(out), usage_layers(usage_tags), bool(bounds)))
            if schedule is not None:
                write_schedule(sr.writer, schedule, previous, step)
            sr.writer.flush()
            _write_eval_csv(sr)

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self, started: float) -> None:
        state = {"agent": self.agent.state_dict(), "rows": [sr.rows for sr in self.seed_runs],
                 "configs": [to_dict(dataclasses.replace(c, seed=s, engine="batched"))  # as in config.yaml
                             for c, s in zip(self.configs, self.seeds, strict=True)],
                 "usage": [sr.usage for sr in self.seed_runs], "metrics": [sr.metrics for sr in self.seed_runs],
                 "last_eval": self.last_eval, "seconds": self.seconds + time.perf_counter() - started,
                 # the members the agent holds (members that reached their budgets have left it)
                 "members": [r.path.name for r in self.runs], "left": self.left}
        write_checkpoint(self.runs[0].path, self.agent.num_timesteps,
                         lambda folder: save_torch(state, folder / CHECKPOINT_FILE))

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, console: Console) -> None:
        from moerl.rl.console import BatchProgress

        config = self.config
        total = config.timesteps
        started = time.perf_counter()
        members = "seeds" if all(c == config for c in self.configs) else "members"
        label = (f"{config.env} {config.network.arch}" + (f"/{config.network.router}" if config.network.uses_moe
                                                          else "") + f" {len(self.seeds)} {members}")
        self.view = BatchProgress(console, total, label, self.eval_names, len(self.seeds), self.spec.schedule(),
                                  self.spec.block_steps)
        console.start(label, total, "step", initial=self.agent.num_timesteps)
        if self.last_eval < 0:  # when the SB3 path evaluates: at the start, every eval.freq steps, at the end
            self.evaluate(0, config.eval.episodes)
        # PROGRESS_STEPS only splits learn() for the view: a run learned in any chunks is the same run (tested)
        every = [f for f in (config.eval.freq, self.engine.checkpoint_steps(config), PROGRESS_STEPS) if f]
        ckpt = self.engine.checkpoint_steps(config)
        try:
            # (the agent is looked up anew: members that reach their budgets leave it, finish_members)
            with stop_on_signals(lambda name: self.agent.request_stop()) as signals:
                while self.agent.num_timesteps < total and not self.agent.stopped:
                    agent = self.agent
                    before = agent.num_timesteps
                    budgets = [c.timesteps for c in self.configs]
                    # chunks end at every active member's budget, where it leaves the batch
                    target = min([total, *((agent.num_timesteps // f + 1) * f for f in every),
                                  *(b for b in budgets if b > agent.num_timesteps)])
                    # each member's exploration over its own budget; one total when they share it (as before)
                    agent.learn(target, schedule_timesteps=budgets if len(set(budgets)) > 1 else total)
                    self.view.episodes(agent.log.episodes)
                    self.view.show(agent.num_timesteps)
                    if agent.stopped:
                        break
                    n = agent.num_timesteps
                    # a multiple of the cadence reached or passed: DQN's chunks end on them; PPO's at the
                    # rollout boundary after them (BatchedPPO stops only between rollouts, as SB3's PPO)
                    if _passed(before, n, config.eval.freq):
                        self.evaluate(n, config.eval.episodes)
                    finishing = [i for i, b in enumerate(budgets) if b == n]
                    if n < total and finishing:
                        self.finish_members(finishing, started, console)
                    if n < total and _passed(before, n, ckpt):
                        self.checkpoint(started)
                if self.agent.stopped:
                    for sr in self.seed_runs:
                        if not sr.done:
                            sr.writer.flush()
                    self.checkpoint(started)
                signals.raise_if_stopped()
        finally:
            console.close()
        self.seconds += time.perf_counter() - started
        console.say(f"final evaluation: {config.eval.final_episodes} greedy episodes per task and seed ...")
        self._write_out(self.seconds, sum(self.left) + self.agent.num_timesteps * len(self.seeds))

    def _write_out(self, seconds: float, env_steps: int) -> None:
        """What the end of training does for every member of this batch: an evaluation at the last step (when
        the last was not there), the final evaluation, each member's model, results.json and schedule.json;
        then each member is released (:attr:`release`: marked finished). ``env_steps``: those the process
        took in ``seconds`` (for the speed in results.json)."""
        config, agent = self.config, self.agent
        if self.last_eval != agent.num_timesteps:
            self.evaluate(agent.num_timesteps, config.eval.episodes)
        final = self.evaluate_tasks(config.eval.final_episodes, config.seed + 20_000)
        for i, sr in enumerate(self.seed_runs):
            if sr.done:
                continue
            sr.writer.close()
            self.finished.append((sr, _finish_seed(sr, i, agent, self.configs[i], self.specs[i], self.env_ids[i],
                                                   final, self.member_bounds[i], seconds, self.batch_size,
                                                   env_steps)))
            if self.release is not None:
                self.release(sr.run)

    def finish_members(self, finishing: list[int], started: float, console: Console) -> None:
        """Members ``finishing`` (indices) reached their budgets and the others go on: write them out as the
        end of a batch does (:meth:`_write_out`, on an engine of them alone, so the others' files get no extra
        evaluation), then go on with the others alone (:meth:`BatchedDQN.select`). A member that finished in
        the process that wrote the checkpoint (``done``) just leaves."""
        remaining = [i for i in range(len(self.seeds)) if i not in finishing]
        if not remaining or 0 not in remaining:
            raise ValueError("the leader (it holds the checkpoint) must have the largest budget")
        writing = [i for i in finishing if not self.seed_runs[i].done]
        if writing:
            names = ", ".join(self.runs[i].path.name for i in writing)
            console.say(f"{names} reached {'its' if len(writing) == 1 else 'their'} budget "
                        f"({self.agent.num_timesteps:,} steps): final evaluation ...")
            part = self._subset(writing, self.agent.select(writing))
            part.view = None
            part._write_out(self.seconds + time.perf_counter() - started,
                            sum(self.left) + self.agent.num_timesteps * len(self.seeds))
        self.left.extend(self.configs[i].timesteps for i in finishing)
        agent = self.agent.select(remaining)
        self._keep(remaining)
        self.agent = agent
        if self.view is not None:
            self.view.keep(remaining)

    def _subset(self, members: list[int], agent: Any) -> _Batch:
        """This batch for ``members`` alone (indices) on ``agent``; what it finishes joins :attr:`finished`."""
        part = copy.copy(self)
        part._keep(members)
        part.agent = agent
        return part

    def _keep(self, members: list[int]) -> None:
        """Keep every per-member list for ``members`` (indices, in this order)."""
        for name in ("configs", "seeds", "runs", "env_ids", "specs", "eval_suites", "member_bounds", "schedules",
                     "seed_runs"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in members])
        self.config, self.env_id, self.spec = self.configs[0], self.env_ids[0], self.specs[0]
        self.bounds = self.member_bounds[0]

    def summary(self, console: Console) -> None:
        """The closing table of the batch (median over seeds; see :mod:`moerl.rl.console`)."""
        from moerl.rl.console import last_eval_returns, summary_lines

        if not self.finished:
            return
        last = [last_eval_returns(sr.rows) for sr, _ in self.finished]
        steps = [step for step, _ in last]
        console.summary(summary_lines([r for _, r in self.finished], [r for _, r in last], max(steps),
                                      self.config.eval.episodes))


def _passed(before: int, now: int, every: int) -> bool:
    """Whether the steps ``(before, now]`` hold a multiple of ``every`` (0: never)."""
    return bool(every) and now // every > before // every


def _members_status(runs: list[Any], seeds: list[int]) -> dict[str, Any]:
    return {"leader": runs[0].path.name, "members": [r.path.name for r in runs], "seeds": seeds}


def train_seeds(config: Any, seeds: list[int], logdir: str, run_name: str | None, console: Console) -> list[Path]:
    """Train ``seeds`` of ``config`` together with the batched engine; one finished run directory per seed."""
    return train_members([config] * len(seeds), seeds, logdir, [run_name] * len(seeds), console)


def check_member_configs(configs: list[Any]) -> None:
    """Members of one batch share everything but :data:`MEMBER_KEYS` (and the per-member dqn settings the
    engine checks): one evaluation and checkpoint cadence, one network, one device; each may have its own
    budget (it leaves the batch when it reaches it)."""
    from moerl.core.config import leaf_keys

    own = engine_of(configs[0]).member_keys()
    distinct: list[Any] = []  # the seeds of one config are equal configs: each distinct one is checked once
    for config in configs:
        if not any(config == seen for seen in distinct):
            distinct.append(config)
    first = to_dict(distinct[0])
    for config in distinct[1:]:
        other = to_dict(config)
        for key in sorted(leaf_keys(first) | leaf_keys(other)):
            if any(key == k or key.startswith(f"{k}.") for k in own):
                continue
            if _get(first, key) != _get(other, key):
                raise ConfigError(f"the members of one batch must share {key} (got {_get(first, key)!r} and "
                                  f"{_get(other, key)!r}); they may differ in {', '.join(own)}")


#: Config keys members of one batch may hold each their own, besides the engine's per-member dqn settings.
MEMBER_KEYS = ("env", "env_kwargs", "eval.reference_runs", "timesteps")


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def train_members(configs: list[Any], seeds: list[int], logdir: str, run_names: list[str | None],
                  console: Console) -> list[Path]:
    """Train one batch of members, member ``i`` being ``configs[i]`` with seed ``seeds[i]`` (its run directory
    ``<run_names[i] or its label>_s<seed>``); one finished run directory per member.

    ``configs[i].seed`` is the batch seed (evaluation streams; the same for every member), the run seed is
    ``seeds[i]``: a member evaluates the same alone or in any batch.

    Members may have budgets of their own (``timesteps``): the batch trains to the largest, and a member that
    reaches its own is written out and leaves it (:meth:`_Batch.finish_members`). The leader (the first
    member, whose directory holds the checkpoint) is then a member of the largest budget: the members are
    ordered by budget, largest first (stably), so the checkpoint's home is never written out first. The run
    directories are returned in the order of ``configs``.
    """
    from moerl.rl.config import engine_device, resolve_env, run_label

    engine = engine_of(configs[0])
    # budgets and capacities are resolved on copies, once per distinct (config, name): the seeds of one config
    # share them, and building the suite and the label for each of thousands of seeds took minutes
    resolved: dict[tuple[int, str | None], tuple[Any, str, int, Any]] = {}
    copies, bases, capacities = [], [], []
    for original, name in zip(configs, run_names, strict=True):
        key = (id(original), name)
        if key not in resolved:
            config = dataclasses.replace(original)
            spec = suite_spec(resolve_env(config.env), config.env_kwargs)
            base = name or run_label(to_dict(config))  # before the budget is resolved, as moerl sweep names it
            resolved[key] = (config, base, engine_of(config).resolve(config, spec), spec)
        config, base, capacity, spec = resolved[key]
        copies.append(dataclasses.replace(config))
        bases.append(base)
        capacities.append(capacity)
    configs = copies
    check_member_configs(configs)
    order = sorted(range(len(configs)), key=lambda i: -configs[i].timesteps)  # stable: the largest budgets first
    configs, seeds, bases = [configs[i] for i in order], [seeds[i] for i in order], [bases[i] for i in order]
    names_of_tasks = {member_spec.task_names for *_, member_spec in resolved.values()}
    if len(names_of_tasks) > 1:
        raise ConfigError(f"the members of one batch must share their tasks, got {sorted(names_of_tasks)}")
    engine.check_sizes(configs[0], spec, len(seeds), max(capacities))
    names = [f"{base}_s{seed}" for base, seed in zip(bases, seeds, strict=True)]
    if len(set(names)) != len(names):
        raise ConfigError(f"two members of one batch would share a run directory: {sorted(names)}")
    for name in names:
        check_run_name(name)
    runs: list[Any] = []
    batch = _Batch(configs, seeds, runs)  # builds everything before any directory exists
    runs.extend(RunDir.create(logdir, name) for name in names)
    with running_many(runs, "moe-dqn", list(seeds), str(engine_device(configs[0]))) as marked:
        batch.release = marked.finish
        # TensorBoard writers once the runs are marked (a full disk at the start leaves no run behind)
        batch.seed_runs = [_SeedRun(run, seed) for run, seed in zip(runs, seeds, strict=True)]
        for run, seed, config in zip(runs, seeds, configs, strict=True):
            run.write_status("running", batch=_members_status(runs, seeds), batch_seed=config.seed)
            run.write_config(to_dict(dataclasses.replace(config, seed=seed, engine="batched")))
        batch.train(console)
    remove_checkpoints(runs[0].path)
    batch.summary(console)
    paths: list[Path] = [Path()] * len(runs)
    for i, run in zip(order, runs, strict=True):
        paths[i] = run.path
    return paths


def resume_seeds(request: Any) -> list[Path]:
    """``moerl train --resume RUN`` for a member of a batch: continue the batch's unfinished members from its
    checkpoint.

    Everything is checked before anything is written: the batch record, every member (a deleted one is
    named), the leader's checkpoint; then :func:`running_many` locks every member it trains. Members with
    budgets of their own may have finished before (their files are left alone): those that left the batch
    before the checkpoint are not in it; one that finished after it is in it, and trains on in the batch
    to its budget without writing anything, so the others compute exactly as they did (``_SeedRun.done``)."""
    from moerl.rl.config import apply_resume_flags, engine_device, stored_config

    check_resume_request(request, {"timesteps": "a new total", "device": "where to continue"})
    member = RunDir(request.resume)
    leader_name, names, seeds, batch_seed = _batch_record(member.path, resume_status(member.path))
    runs = [RunDir(member.path.parent / name) for name in names]
    for run in runs:
        _check_member_exists(run, member.path.parent / leader_name)
    leader, step = RunDir.open_resumable(member.path.parent / leader_name, "moe-dqn")
    states = {run.path.name: run_state(resume_status(run.path)) for run in runs}
    for run in runs:
        if states[run.path.name] == "running":
            raise ConfigError(f"'{run.path}' (a member of this batch) is running; the batch cannot resume")
    state = load_checkpoint_file(leader.path, CHECKPOINT_FILE, lambda path: _read_batch_state(path, names))
    held = list(state.get("members") or names)  # a checkpoint from before member budgets holds every member
    for run in runs:
        if run.path.name not in held and states[run.path.name] != "finished":
            raise ConfigError(f"'{run.path}' left its batch before the checkpoint (at its budget) but is "
                              f"{states[run.path.name]}, not finished; the batch cannot resume")
    done = frozenset(name for name in held if states[name] == "finished")
    batch_runs = [runs[names.index(name)] for name in held]
    batch_seeds = [seeds[names.index(name)] for name in held]
    configs = []
    for run, saved in zip(batch_runs, state.get("configs") or [None] * len(batch_runs), strict=True):
        # each member's own config (members of a sweep group differ in their env settings), as checkpointed
        raw = stored_config(run.read_config())
        config = from_dict(engine_of(raw).schema, raw)
        if saved is not None:
            _check_member_config(run, to_dict(config), stored_config(saved))
        config.seed = batch_seed
        configs.append(config)
    if request.option("timesteps") is not None and (len({c.timesteps for c in configs}) > 1 or state.get("left")):
        raise ConfigError("--timesteps sets one total for every member, and the members of this batch have "
                          "budgets of their own; resume it without --timesteps")
    configs = [c if run.path.name in done else
               apply_resume_flags(c, request.option("timesteps"), request.option("device"), step,
                                  engine_of(c).validate)
               for run, c in zip(batch_runs, configs, strict=True)]
    if request.option("device") is not None:  # one device for the whole batch, the finished members' too
        configs = [dataclasses.replace(c, device=request.option("device")) for c in configs]
    active = [i for i, run in enumerate(batch_runs) if run.path.name not in done]
    with running_many([batch_runs[i] for i in active], "moe-dqn", [batch_seeds[i] for i in active],
                      str(engine_device(configs[0])), resumed=(leader, step)) as marked:
        batch = _Batch(configs, batch_seeds, batch_runs, resume=state, done=done, batch_size=len(names))
        batch.release = marked.finish
        batch.left = [int(b) for b in state.get("left", [])]
        for i in active:
            run, seed, config = batch_runs[i], batch_seeds[i], batch.configs[i]
            run.write_config(to_dict(dataclasses.replace(config, seed=seed, engine="batched")))
        console = request.console()
        batch.train(console)
    remove_checkpoints(leader.path)
    batch.summary(console)
    return [r.path for r in batch_runs if r.path.name not in done]


#: Keys a resume may change (``--timesteps``, ``--device``): see :func:`moerl.rl.config.apply_resume_flags`.
_RESUME_KEYS = ("timesteps", "device")


def _check_member_config(run: Any, config: dict[str, Any], saved: dict[str, Any]) -> None:
    """A member's ``config.yaml`` must be the config its batch was checkpointed with (an edit is refused, as
    for the leader's: :meth:`RunDir.open_resumable`). A key the checkpoint lacks that now holds its default
    (:data:`~moerl.runs.kinds.NOT_IN_ID_AT_DEFAULT`: a setting added after the run started) is no edit: the
    run computed exactly what that default computes."""
    from moerl.core.config import flatten

    now, then = flatten(config), flatten(saved)
    for key in sorted(set(now) | set(then)):
        added_at_default = key not in then and key in NOT_IN_ID_AT_DEFAULT and now[key] == NOT_IN_ID_AT_DEFAULT[key]
        if key.split(".")[0] not in _RESUME_KEYS and now.get(key) != then.get(key) and not added_at_default:
            raise ConfigError(f"'{run.path / 'config.yaml'}' was edited after its checkpoint ({key}: "
                              f"{then.get(key)!r} -> {now.get(key)!r}); a resume keeps the config it was "
                              "checkpointed with")


def _batch_record(path: Path, status: dict[str, Any]) -> tuple[str, list[str], list[int], int]:
    """The batch a member's ``status.json`` names: (leader, members, seeds, the batch's config seed), each
    checked (names are single folders beside the member, one seed per member), or one line saying the
    record is damaged."""
    info = status.get("batch")
    info = info if isinstance(info, dict) else {}
    leader, members, seeds, batch_seed = (info.get("leader"), info.get("members"), info.get("seeds"),
                                          status.get("batch_seed", 0))
    if not (isinstance(leader, str) and isinstance(members, list) and leader in members
            and isinstance(seeds, list) and len(seeds) == len(members)
            and all(isinstance(m, str) for m in members)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in [*seeds, batch_seed])):
        raise ConfigError(f"'{path / 'status.json'}' has a damaged batch record (it needs a leader, its members "
                          "and one seed per member); the batch cannot resume")
    for name in members:
        try:
            check_run_name(name)
        except ConfigError:
            raise ConfigError(f"'{path / 'status.json'}' has a damaged batch record (member {name!r} is not a "
                              "folder beside it); the batch cannot resume") from None
    return leader, list(members), list(seeds), int(batch_seed)


def _check_member_exists(run: RunDir, leader: Path) -> None:
    """Every member must be there: the batch trains them all or none."""
    if not run.path.is_dir():
        what = "the leader (it holds the checkpoint)" if run.path == leader else f"a member of the batch led by '{leader}'"
        raise ConfigError(f"'{run.path}', {what}, is missing; the batch cannot resume without it")


def _read_batch_state(path: Path, names: list[str]) -> dict[str, Any]:
    """``batch.pt``, with what a resume reads from it, for a batch of the runs ``names``: it holds them all,
    or those of them that had not reached their budgets (``members``, in order); anything else is damaged."""
    import torch

    state = torch.load(path, weights_only=False, map_location="cpu")
    missing = [k for k in ("agent", "rows", "last_eval", "seconds") if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    held = state.get("members", names)
    if not (isinstance(held, list) and held and all(isinstance(m, str) for m in held)
            and [m for m in names if m in held] == held and held[0] == names[0]):
        raise ValueError(f"its members {held!r} are not the batch's {names!r}, led by its first")
    if not isinstance(state["rows"], list) or len(state["rows"]) != len(held):
        raise ValueError(f"it holds {len(state['rows'])} members' rows, the batch has {len(held)}")
    return state


def _write_eval_csv(sr: _SeedRun) -> None:
    """``eval.csv``, ``eval_usage.csv`` (when the network has a router) and ``metrics.csv`` of one seed, whole."""
    write_tables(sr.run.path, sr.rows, sr.usage, sr.metrics)


def _finish_seed(sr: _SeedRun, i: int, agent: Any, config: Any, spec: Any, env_id: str,
                 final: dict[str, np.ndarray], bounds: dict[str, tuple[float, float]], seconds: float,
                 num_seeds: int, env_steps: int) -> dict[str, Any]:
    """Write seed ``i``'s model (an SB3 zip), results.json and schedule.json; ``num_seeds``: the members that
    trained in the batch, ``env_steps``: the env steps the process took in ``seconds``."""
    from moerl.rl.config import reference_rows
    from moerl.rl.continual import continual_metrics
    from moerl.rl.envs.attributes import normalized_return

    parameters = engine_of(config).export(sr.run, i, agent, config, spec, sr.seed)
    schedule = spec.schedule()
    sr.run.write_json("schedule.json", schedule_record(schedule, spec.block_steps))
    final_eval = {}
    for name, returns in final.items():
        mean = float(returns[i].mean())
        final_eval[name] = final_eval_entry(mean, float(returns[i].std()),
                                            normalized_return(mean, bounds[name]) if name in bounds else None,
                                            int(returns.shape[1]))
    reference = reference_rows(config.eval.reference_runs)
    rows = [{k: str(v) for k, v in r.items()} for r in sr.rows]
    results = run_results(
        config, env_id, sr.seed, engine="batched", seeds_in_batch=num_seeds, seconds=seconds,
        env_steps=env_steps, parameters=parameters,
        final_eval=final_eval,
        continual=continual_metrics(rows, schedule, spec.block_steps, reference) if bounds else None)
    sr.run.write_json("results.json", results)
    return results


def _renamed(rows: list[dict[str, Any]], env_id: str) -> list[dict[str, Any]]:
    """A checkpoint's eval or usage rows with a plain env's task under the name runs now record
    (:func:`~moerl.rl.batch_engines.task_names`): checkpoints written before named it by its suite task."""
    old = PLAIN_IDS.get(env_id)
    return [{**r, "task": env_id} if old is not None and r.get("task") == old else r for r in rows]
