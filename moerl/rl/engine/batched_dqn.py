"""MoE DQN for S seeds at once: the SB3 path's algorithm, with seeds as a batch dimension on one device.

Why: a study is hundreds of runs of small networks, and the SB3 path spends most of its time in Python
per step and per seed. Here one Python step advances every seed: the suites are
:class:`~moerl.rl.envs.batched.BatchedTaskSuite` (CartPole / MountainCar) or
:class:`~moerl.rl.envs.batched_minatar.BatchedMinAtarSuite` (MinAtar; observations kept as bytes, in the
replay buffer too, and made float by the encoder only for the network), the Q-networks :class:`~moerl.rl.nets.batched.BatchedQNetwork`,
the replay buffers :class:`~moerl.rl.algos.replay.BatchedReplayBuffer`. The three are separate
modules so that another algorithm can reuse the suites and networks.

The algorithm is :class:`~moerl.rl.sb3.moe_dqn.MoEDQN`'s, step for step, with the same hyper-parameters
(:class:`~moerl.rl.algos.dqn.DQNHyperParams`, one schema), the same loss (:mod:`moerl.rl.algos.dqn`) and the
same observation handling (:class:`~moerl.rl.nets.encoder.ObservationEncoder` rescales inputs, reads the
task id and masks actions, as the SB3 policy's Q-network does with the same functions):

* warm-up: uniform random *valid* actions until ``learning_starts`` env steps;
* then epsilon-greedy with SB3's linear schedule over ``exploration_fraction`` of the run, random actions
  among the task's valid ones, greedy actions by the masked argmax;
* each env step stores one transition per seed (truncations are not terminations); every
  ``target_update_interval`` env steps the target network is updated (polyak with ``tau``); every
  ``train_freq`` env steps, once past ``learning_starts``, ``gradient_steps`` updates: TD target from the
  target network's masked max, MSE or Huber loss plus ``aux_loss_coef`` times the routers' balancing loss,
  Adam (eps ``adam_eps``; or ``optimizer: rmsprop``) and gradient clipping at ``max_grad_norm``, *per seed*.

Seed ``i`` starts from the very weights the SB3 path builds for seed ``i`` (tested), and its environment,
exploration and minibatches draw from its own streams (:class:`~moerl.core.seed_streams.SeedStreams`), so a seed
follows the same path alone or in any batch, up to float rounding in batched matrix products (exactly, on
CPU, in the tests). The engines' random numbers differ (SB3 draws from numpy's global generator), so the
two agree statistically, not bitwise: ``scripts/validate_batched_engine.py`` measures it.

The host waits on the device only at boundaries. :meth:`BatchedDQN.advance` runs env steps and updates
without reading a device value on the host (no ``.item()``, ``bool(tensor)``, ``.cpu()``, ``.numpy()``:
tested by making them raise), keeping losses, MoE metrics and finished episodes as device tensors with the
env step each belongs to; :meth:`BatchedDQN.learn` is ``advance`` and then the boundary, which moves them
into :attr:`BatchedDQN.log` in one transfer. Such a chunk is what ``torch.compile`` or a CUDA graph can
capture.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from moerl.core.config import from_dict, to_dict
from moerl.core.cpu_allocator import keep_freed_memory
from moerl.core.denormals import flush_denormals
from moerl.core.errors import ConfigError, check_positive
from moerl.core.seed_streams import SeedStreams
from moerl.core.seeding import api_seeds
from moerl.core.threads import TRAINING_THREADS, torch_threads
from moerl.rl.algos.dqn import DQNHyperParams, default_capacity, optimizer_of, td_loss, td_target, total_loss
from moerl.rl.algos.replay import BatchedReplayBuffer
from moerl.rl.engine.episode_log import ended_episodes
from moerl.rl.engine.greedy_eval import GreedyEvaluation
from moerl.rl.engine.members import check_distinct_members, check_member_settings
from moerl.rl.engine.seed_adam import seed_adam
from moerl.rl.engine.suite_input import suite_of
from moerl.rl.envs.batched_suites import make_batched_suite
from moerl.rl.nets.batched import BatchedQNetwork, BatchedRecord, clip_grad_norm_per_seed
from moerl.rl.nets.encoder import MoENetworkConfig, ObservationEncoder, checked_network
from moerl.rl.nets.member_adam import MemberAdam
from moerl.rl.nets.obs_layout import check_layout_fits, layout_for_env
from moerl.rl.spec import SuiteSpec

#: Stream purpose of exploration draws (see :class:`SeedStreams`).
_EXPLORE_STREAM = 3


def linear_schedule(start: float, end: float, fraction: float, progress_remaining: float) -> float:
    """SB3's ``get_linear_fn``: ``start`` to ``end`` over the first ``fraction`` of the run, then ``end``."""
    done = 1.0 - progress_remaining
    if done > fraction:
        return end
    return start + done * (end - start) / fraction


def hyperparams(dqn: DQNHyperParams | dict[str, Any] | None) -> DQNHyperParams:
    """``dqn`` as checked settings: the object or a dict of its keys, read (types) and validated as
    ``moerl train``'s ``dqn:`` section (:func:`from_dict`, :meth:`DQNHyperParams.validate`)."""
    if dqn is None:
        return DQNHyperParams()
    return from_dict(DQNHyperParams, to_dict(dqn) if isinstance(dqn, DQNHyperParams) else dqn, "dqn.").validate()


@dataclass
class TrainLog:
    """Per-seed training statistics gathered since the last :meth:`BatchedDQN.pop_log` (numpy, (S,))."""

    td_loss: list[np.ndarray] = field(default_factory=list)
    aux_loss: list[np.ndarray] = field(default_factory=list)
    #: (env step, {metric: (S,)}) every ``metrics_interval`` steps: dormant neurons, router usage and entropy.
    metrics: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    episodes: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


@dataclass
class _PendingLog:
    """What :meth:`BatchedDQN.advance` logged, still on the device: per update the TD and balancing losses
    ``(S,)``, the MoE metrics with their env step, and per env step ``(step, done, task, return, length)``."""

    td_loss: list[torch.Tensor] = field(default_factory=list)
    aux_loss: list[torch.Tensor] = field(default_factory=list)
    metrics: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    episodes: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


#: DQN settings the members of one batch may hold each their own; the rest they share (one update structure).
PER_MEMBER = ("buffer_size", "gamma", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps",
              "learning_rate", "adam_eps")


def _exploration(hp: DQNHyperParams) -> tuple[float, float, float]:
    return hp.exploration_initial_eps, hp.exploration_final_eps, hp.exploration_fraction


def check_members(specs: list[SuiteSpec], hps: list[DQNHyperParams], num_seeds: int) -> list[DQNHyperParams]:
    """:func:`~moerl.rl.engine.members.check_member_settings` for DQN's :data:`PER_MEMBER`."""
    return check_member_settings(specs, hps, num_seeds, PER_MEMBER, "dqn")


class UpdateLoss(nn.Module):
    """One update's forward: the TD targets from the target network, the online Q-values and the loss.

    ``forward(obs, next_obs, actions, rewards, dones, tasks, record=False)`` returns ``(loss to differentiate,
    TD losses (S,), balancing losses (S,) or None, the forward record or None)``; ``record=True`` also keeps
    the online pass's record (MoE metrics). A module of tensors in and out, holding the engine's networks, so
    that :func:`_compiled_update_loss` captures it as one graph (its backward as another) and reuses that graph
    for every engine of the same shapes in a process: dynamo keys compiled code on the module's structure,
    not on which engine holds it.
    """

    def __init__(self, q_net: BatchedQNetwork, q_net_target: BatchedQNetwork, encoder: ObservationEncoder,
                 gamma: float | torch.Tensor, use_aux: bool, loss: str, aux_loss_coef: float) -> None:
        super().__init__()
        self.q_net, self.q_net_target, self.encoder = q_net, q_net_target, encoder
        self.gamma, self.use_aux, self.loss, self.aux_loss_coef = gamma, use_aux, loss, aux_loss_coef

    def forward(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                dones: torch.Tensor, tasks: torch.Tensor | None, record: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, BatchedRecord | None]:
        with torch.no_grad():
            # a transition never crosses an episode end, so s' has the task of s (the suite switches tasks
            # at resets only)
            next_feats, next_task = self.encoder.split(next_obs, tasks)
            next_q = self.encoder.masked(self.q_net_target(next_feats, next_task), next_task)
            target = td_target(next_q, rewards, dones, self.gamma)
        feats, task = self.encoder.split(obs, tasks)
        rec: BatchedRecord | None = None
        if self.use_aux or record:
            q_all, rec = self.q_net.forward_record(feats, task)
        else:
            q_all = self.q_net(feats, task)
        aux = rec.aux_loss() if rec is not None and self.use_aux else None
        td = td_loss(q_all, actions, target, self.loss)
        return total_loss(td, aux, self.aux_loss_coef), td, aux, rec if record else None


def _call(module: nn.Module, *args: Any) -> Any:
    return module(*args)


@functools.cache
def _compiled_update_loss() -> Any:
    """``torch.compile`` of calling an :class:`UpdateLoss`, made on first use (importing dynamo takes time).

    Static shapes (a batch's shapes never change) and the whole graph or an error, never a silent partial
    graph. Dynamo compiles once per distinct module structure and shape; its default limit of 8 such
    compilations per function would turn a process that builds many engines (a dry run's calibrations, a
    notebook) into errors, so the limit is raised here for this function's sake."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    return torch.compile(_call, dynamic=False, fullgraph=True)


class BatchedDQN(GreedyEvaluation):
    """S seeds of MoE DQN on one task suite, trained together (see the module docstring).

    A batch member is (suite, seed, dqn settings): members share the network and the update structure, and
    may differ in their suite's setting and in :data:`PER_MEMBER` (a study's runs of one architecture).

    Args:
        suite: the task suite: a :class:`TaskSuiteEnv` or ``MinAtarSuiteEnv`` (its tasks, schedule and limits
            are the spec), also as
            ``gym.make("moerl/...")`` returns it (the suite inside Gymnasium's checking wrappers); or one per
            member (see :class:`~moerl.rl.envs.batched.BatchedTaskSuite` and
            :class:`~moerl.rl.envs.batched_minatar.BatchedMinAtarSuite` for what they must share).
        seeds: one run per seed: distinct integers, or text as ``moerl train --seeds`` reads it (``"0-9"``).
        network: the Q-network, as for :class:`~moerl.rl.sb3.moe_dqn.MoEDQN`'s ``policy_kwargs["network"]``.
        dqn: the algorithm's settings, a :class:`DQNHyperParams` or a dict of its keys (defaults:
            :class:`DQNHyperParams`); or one per member.
        device: where everything lives.
        metrics_interval: env steps between MoE metrics of a training minibatch (as ``logging.metrics_interval``
            on the SB3 path), gathered in :attr:`log`.
        compile: run each update's forward and backward through ``torch.compile`` (:attr:`compiled`); the
            eager update is the reference, and a compiled one agrees with it within float32 rounding.

    Every argument is checked as ``moerl train`` checks it (the same functions, the same one-line
    :class:`~moerl.core.errors.ConfigError`) before anything is built.
    """

    def __init__(self, suite: SuiteSpec | Sequence[SuiteSpec], seeds: str | Sequence[int],
                 network: MoENetworkConfig | dict[str, Any] | None = None,
                 dqn: DQNHyperParams | dict[str, Any] | Sequence[DQNHyperParams | dict[str, Any]] | None = None,
                 device: str | torch.device = "cpu",
                 metrics_interval: int = 1000, compile: bool = False) -> None:
        members = isinstance(suite, Sequence) or isinstance(dqn, Sequence)
        self.seeds = api_seeds(seeds, distinct=not members)  # members of several configs may share a seed
        self.num_seeds = len(self.seeds)
        self.network_config = checked_network(network)
        if compile and self.network_config.expert_compute == "routed":
            raise ConfigError("compile does not run network expert_compute 'routed' (grouped_mm is not "
                              "compiled); use one or the other")
        if compile and self.network_config.expert_compute == "auto":  # auto: routed only where not compiled
            self.network_config = replace(self.network_config, expert_compute="dense")
        check_positive("logging.metrics_interval", metrics_interval)
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # activations of many seeds: see moerl.core.cpu_allocator
            flush_denormals()  # Adam's decayed moments: see moerl.core.denormals
        specs = [suite_of(s) for s in suite] if isinstance(suite, Sequence) else [suite_of(suite)] * self.num_seeds
        hps = [hyperparams(d) for d in dqn] if isinstance(dqn, Sequence) else [hyperparams(dqn)] * self.num_seeds
        #: Each member's settings; :attr:`hp` holds those the members share (see :data:`PER_MEMBER`).
        self.member_hp = check_members(specs, hps, self.num_seeds)
        check_distinct_members(specs, hps, self.seeds)
        self.hp = hps[0]
        self.env = make_batched_suite(specs, self.seeds, self.device)
        layout = layout_for_env(specs[0])
        check_layout_fits(self.network_config, layout, repr(specs[0]))
        # The reference engine's observation rules (rescaling, task id, action masks): one encoder for both.
        self.encoder = ObservationEncoder(layout, self.env.n_actions, self.network_config).to(self.device)
        in_features, n_actions = self.encoder.in_features, self.env.n_actions
        grid = layout.grid_shape  # the conv torso's grid (None without one), as the SB3 policy reads it
        self.q_net = BatchedQNetwork.from_seeds(in_features, n_actions, self.network_config, self.seeds, grid)
        self.q_net_target = BatchedQNetwork.from_seeds(in_features, n_actions, self.network_config, self.seeds, grid)
        self.q_net.to(self.device)
        self.q_net_target.to(self.device).copy_from_(self.q_net)
        self.q_net_target.train(False)
        self.optimizer: torch.optim.Optimizer
        if self.hp.optimizer != "adam":  # dqn.optimizer (shared by the members): the SB3 path's, optimizer_of
            if len({hp.learning_rate for hp in hps}) > 1:
                raise ConfigError(f"members with learning rates of their own need dqn.optimizer adam, not "
                                  f"{self.hp.optimizer}")
            optimizer_class, optimizer_kwargs = optimizer_of(self.hp)
            self.optimizer = optimizer_class(self.q_net.parameters(), lr=self.hp.learning_rate, **optimizer_kwargs)
        else:  # per-seed Adam: fused when the members share lr and eps, else one lr and eps per member
            self.optimizer = seed_adam(self.q_net.parameters(), [hp.learning_rate for hp in hps],
                                       [hp.adam_eps for hp in hps], self.device)
        capacities = [hp.buffer_size or default_capacity(spec.block_steps if spec.schedule() else None)
                      for hp, spec in zip(hps, specs, strict=True)]
        # Observations stored in the suite's dtype (MinAtar's bytes: a quarter of float32's memory); the
        # encoder makes them float for the network.
        self.buffer = BatchedReplayBuffer(self.seeds, capacities, self.env.obs_dim, self.device, self.env.obs_dtype)
        # Per-member values as (S, ...) tensors only where members differ: a uniform batch computes with
        # Python floats exactly as before.
        gammas = [hp.gamma for hp in hps]
        self._gamma: float | torch.Tensor = (gammas[0] if len(set(gammas)) == 1 else
                                             torch.tensor(gammas, dtype=torch.float32, device=self.device)[:, None])
        self._uniform_exploration = len({_exploration(hp) for hp in hps}) == 1
        self._explore = SeedStreams(self.seeds, _EXPLORE_STREAM, self.device)
        self.use_aux = self.hp.aux_loss_coef > 0 and self.network_config.balance_loss != "none"
        self.num_timesteps = 0
        self.n_updates = 0
        self.metrics_interval = metrics_interval
        self._last_metrics_step = 0
        self.exploration_rate: float | torch.Tensor = (
            self.hp.exploration_initial_eps if self._uniform_exploration else
            torch.tensor([hp.exploration_initial_eps for hp in hps], dtype=torch.float32, device=self.device))
        self.log = TrainLog()
        self._pending = _PendingLog()
        self._obs: torch.Tensor | None = None
        self._stop = False
        #: Whether updates run compiled: ``torch.compile`` of :class:`UpdateLoss` (the target pass, the
        #: online pass and the loss; autograd compiles their backward), once per process and shape (seconds
        #: to tens of seconds; measured in benchmarks/compiled_steps.py). The MoE-metrics pass every
        #: ``metrics_interval`` steps stays eager, as do acting, the env and the optimiser (already fused).
        self.compiled = bool(compile)
        self.update_loss = UpdateLoss(self.q_net, self.q_net_target, self.encoder, self._gamma, self.use_aux,
                                      self.hp.loss, self.hp.aux_loss_coef)

    # ------------------------------------------------------------------ observations -> network
    def _split(self, obs: torch.Tensor, task: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(S, B, obs_dim) observations -> (S, B, features) and (S, B) task ids, as the SB3 policy reads them;
        ``task``: the ids when the env or the replay buffer has them (the one-hot is then not decoded)."""
        return self.encoder.split(obs, task)

    def _policy_scores(self, feats: torch.Tensor, task: torch.Tensor | None,
                       record: bool = False) -> tuple[torch.Tensor, BatchedRecord | None]:
        """The online network's Q-values (and its record when ``record``), in evaluation mode: what greedy
        actions and :meth:`evaluate` read (:class:`GreedyEvaluation`)."""
        self.q_net.train(False)
        if record:
            return self.q_net.forward_record(feats, task)
        return self.q_net(feats, task), None

    def _random_valid(self, task: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
        """(S,) uniform valid actions for tasks ``task`` (S,) from uniforms ``u`` (S,)."""
        mask = self.encoder.task_mask(task, u.shape)
        k = (u * mask.sum(1)).long()  # the k-th valid action
        return (mask.cumsum(1) > k[:, None]).float().argmax(1)

    # ------------------------------------------------------------------ the loop
    def learn(self, total_timesteps: int, schedule_timesteps: int | Sequence[int] | None = None, *,
              threads: int | None = TRAINING_THREADS) -> BatchedDQN:
        """Train every seed until ``num_timesteps`` reaches ``total_timesteps`` (continuing where it stands),
        then gather what the chunk logged into :attr:`log` (the boundary).

        ``schedule_timesteps``: the run's total, when it is trained in chunks (the exploration schedule
        follows the run, as :attr:`MoEDQN.schedule_timesteps`); default ``total_timesteps``. One per member
        for members with budgets of their own: each member's exploration follows its own total.

        ``threads``: torch threads while this call runs, the caller's count restored afterwards (also when it
        raises). The default is the count ``moerl train`` uses (:data:`~moerl.core.threads.TRAINING_THREADS`,
        one), as these small networks run slower on torch's default of one thread per core; ``None`` opts
        out and keeps the caller's ``torch.set_num_threads``.
        """
        with torch_threads(threads):
            self.advance(total_timesteps, schedule_timesteps)
            self.sync_log()
        return self

    def advance(self, total_timesteps: int, schedule_timesteps: int | Sequence[int] | None = None) -> BatchedDQN:
        """:meth:`learn` without its boundary: env steps and updates that never read a device value on the
        host; what they log waits on the device until :meth:`sync_log`."""
        hp = self.hp
        total_for_schedule: int | list[int] = (list(schedule_timesteps) if isinstance(schedule_timesteps, Sequence)
                                               else schedule_timesteps or total_timesteps)
        if isinstance(total_for_schedule, list) and len(total_for_schedule) != self.num_seeds:
            raise ValueError(f"one schedule total per member: {len(total_for_schedule)} for {self.num_seeds}")
        if self._obs is None:
            self._obs = self.env.reset()
        self._stop = False
        while self.num_timesteps < total_timesteps and not self._stop:
            obs = self._obs
            task = self.env.task if self.encoder.layout.num_tasks else None  # the task beside the observation
            draws = self._explore.uniform(2, dtype=torch.float32)  # (S, 2): explore?, which random action
            random_actions = self._random_valid(task, draws[:, 1])
            if self.num_timesteps < hp.learning_starts:
                actions = random_actions
            else:
                greedy = self.greedy_actions(obs[:, None], None if task is None else task[:, None])[:, 0]
                actions = torch.where(draws[:, 0] < self.exploration_rate, random_actions, greedy)
            out = self.env.step(actions, validate=False)  # the engine's actions are valid by construction
            self.num_timesteps += 1
            self.buffer.add(obs, out.final_obs, actions, out.reward, out.terminated, out.task_id)
            self._pending.episodes.append((self.num_timesteps, out.done, out.task_id, out.episode_return,
                                           out.episode_length))
            self._obs = out.obs
            if self.num_timesteps % max(hp.target_update_interval, 1) == 0:
                self.q_net_target.copy_from_(self.q_net)  # tau = 1, the schema's (and SB3's default) hard update
            self.exploration_rate = self._exploration_rate(total_for_schedule)
            if self.num_timesteps % hp.train_freq == 0 and self.num_timesteps > hp.learning_starts:
                self.train(hp.gradient_steps)
        return self

    def _exploration_rate(self, totals: int | list[int]) -> float | torch.Tensor:
        """Epsilon now, each member's schedule over ``totals`` (the run's total, or one per member): a float
        when the members share their schedule and total, else ``(S,)`` float32 (what a float becomes when
        compared with the float32 draws, so a member's decisions are those it makes alone)."""
        t = self.num_timesteps
        if isinstance(totals, int):
            if self._uniform_exploration:
                return linear_schedule(*_exploration(self.hp), 1.0 - t / totals)
            totals = [totals] * self.num_seeds
        rates = [linear_schedule(*_exploration(hp), 1.0 - t / total) for hp, total in zip(self.member_hp, totals,
                                                                                         strict=True)]
        return torch.tensor(rates, dtype=torch.float32, device=self.device)

    def request_stop(self) -> None:
        """Ask :meth:`learn` to return after the current env step (a signal handler calls this): the state is
        then one an uninterrupted run also passes through, so a checkpoint taken there resumes exactly."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

    def select(self, members: Sequence[int]) -> BatchedDQN:
        """A new engine of the given members of this one (indices, in the new order), each continuing exactly
        where it stands: weights, target network, Adam moments, replay contents, environments mid-episode,
        random streams, counters, exploration and the log gathered so far.

        Why: members with budgets of their own leave the batch when they reach them, and the others should
        not keep paying for their slots (a frozen member still costs its share of every product). A member
        then goes on as it would have in the old batch up to float rounding: its random numbers are the
        same (streams are per seed and counter), but products of another batch size may round differently
        (the same members in the same order continue bit for bit: tested). This engine is left as it was.
        """
        idx = [int(i) for i in members]
        if not idx or len(set(idx)) != len(idx) or not all(0 <= i < self.num_seeds for i in idx):
            raise ValueError(f"members must be distinct indices in [0, {self.num_seeds}), got {list(members)}")
        self.sync_log()
        rows = torch.as_tensor(idx, device=self.device)
        new = BatchedDQN([self.env.specs[i] for i in idx], [self.seeds[i] for i in idx], self.network_config,
                         [self.member_hp[i] for i in idx], self.device, self.metrics_interval, self.compiled)
        with torch.no_grad():
            for mine, theirs in ((new.q_net, self.q_net), (new.q_net_target, self.q_net_target)):
                for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
                    a.copy_(b.index_select(0, rows))
                for buf, other in zip(mine.buffers(), theirs.buffers(), strict=True):
                    buf.copy_(other.index_select(0, rows))
        new.optimizer.load_state_dict(_select_optimizer_state(self.optimizer, new.optimizer, rows, self.num_seeds))
        new.buffer.load_state_dict(self.buffer.select_state(rows, new.buffer.capacity))
        new.env.load_state_dict({k: (v if k == "streams" else v.index_select(0, rows))
                                  for k, v in self.env.state_dict().items()})
        new._explore.load_state_dict(self._explore.state_dict())
        new._obs = None if self._obs is None else self._obs.index_select(0, rows)
        new.num_timesteps, new.n_updates = self.num_timesteps, self.n_updates
        new._last_metrics_step = self._last_metrics_step
        rate = self.exploration_rate
        new.exploration_rate = (rate if not isinstance(rate, torch.Tensor) else
                                float(rate[idx[0]]) if new._uniform_exploration and len(set(rate[idx].tolist())) == 1
                                else rate.index_select(0, rows))
        new.log = TrainLog(
            td_loss=[a[idx] for a in self.log.td_loss], aux_loss=[a[idx] for a in self.log.aux_loss],
            metrics=[(step, {k: v[idx] for k, v in m.items()}) for step, m in self.log.metrics],
            episodes=[(step, done[idx], task[idx], ret[idx], length[idx])
                      for step, done, task, ret, length in self.log.episodes])
        return new

    def state_dict(self) -> dict[str, Any]:
        """Everything the rest of training depends on: weights, Adam, replay, environments, streams, counters."""
        import copy

        self.sync_log()  # a checkpoint is a boundary: the log it holds is complete
        return copy.deepcopy({
            "q_net": self.q_net.state_dict(), "q_net_target": self.q_net_target.state_dict(),
            "optimizer": self.optimizer.state_dict(), "buffer": self.buffer.state_dict(),
            "env": self.env.state_dict(), "explore": self._explore.state_dict(), "obs": self._obs,
            "num_timesteps": self.num_timesteps, "n_updates": self.n_updates,
            "exploration_rate": self.exploration_rate, "log": self.log,
            "last_metrics_step": self._last_metrics_step,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of an engine built with the same suite, seeds and config."""
        self.q_net.load_state_dict(state["q_net"])
        self.q_net_target.load_state_dict(state["q_net_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        if "tasks" not in state["buffer"] and self.encoder.layout.num_tasks:  # a checkpoint from before task ids
            decoded = self.encoder.split(self.buffer.observations)[1]
            assert decoded is not None
            self.buffer.tasks.copy_(decoded)
        self.env.load_state_dict(state["env"])
        self._explore.load_state_dict(state["explore"])
        self._obs = None if state["obs"] is None else state["obs"].to(self.device)
        self.num_timesteps, self.n_updates = int(state["num_timesteps"]), int(state["n_updates"])
        rate = state["exploration_rate"]
        self.exploration_rate = rate.to(self.device) if isinstance(rate, torch.Tensor) else float(rate)
        self.log = state["log"]
        self._last_metrics_step = int(state["last_metrics_step"])

    def train(self, gradient_steps: int) -> None:
        """``gradient_steps`` updates of every seed (see the module docstring)."""
        hp = self.hp
        self.q_net.train(True)
        want_metrics = self.num_timesteps - self._last_metrics_step >= self.metrics_interval
        for step in range(gradient_steps):
            data = self.buffer.sample(hp.batch_size)
            tasks = self._task_of(data)
            args = (data.observations, data.next_observations, data.actions, data.rewards, data.dones, tasks)
            if want_metrics and step == 0:  # the recorded pass, eager: once per metrics interval
                self._last_metrics_step = self.num_timesteps
                loss, td, aux, record = self.update_loss(*args, record=True)
                self._pending.metrics.append((self.num_timesteps,
                                              {k: v.detach() for k, v in record.metrics().items()}))
            elif self.compiled:
                loss, td, aux, _ = _compiled_update_loss()(self.update_loss, *args)
            else:
                loss, td, aux, _ = self.update_loss(*args)
            if aux is not None:
                self._pending.aux_loss.append(aux.detach())
            self._pending.td_loss.append(td.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm_per_seed(self.q_net.parameters(), hp.max_grad_norm)
            self.optimizer.step()
        self.n_updates += gradient_steps

    def _task_of(self, data: Any) -> torch.Tensor | None:
        """The task ids stored with a replay minibatch (None for a suite without task one-hots)."""
        return data.tasks if self.encoder.layout.num_tasks else None

    def pop_log(self) -> TrainLog:
        """What training gathered since the last call (for logging), and start a new log."""
        self.sync_log()
        log, self.log = self.log, TrainLog()
        return log

    def sync_log(self) -> None:
        """The boundary: move what :meth:`advance` logged on the device into :attr:`log` (numpy), one
        transfer per kind; episodes are kept for the env steps where some seed's episode ended."""
        pending, self._pending = self._pending, _PendingLog()
        if pending.td_loss:
            self.log.td_loss.extend(torch.stack(pending.td_loss).cpu().numpy())
        if pending.aux_loss:
            self.log.aux_loss.extend(torch.stack(pending.aux_loss).cpu().numpy())
        for step, metrics in pending.metrics:
            self.log.metrics.append((step, {k: v.cpu().numpy() for k, v in metrics.items()}))
        self.log.episodes.extend(ended_episodes(pending.episodes, self.device))


def _select_optimizer_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer, rows: torch.Tensor,
                            members: int) -> dict[str, Any]:
    """``old``'s state for the members ``rows``, in the form ``new`` loads: per-parameter moments sliced along
    the member dimension; the step count kept, as a tensor for torch's Adam and an int for :class:`MemberAdam`
    (the two hold the same Adam state otherwise)."""
    state = old.state_dict()
    as_int = isinstance(new, MemberAdam)
    sliced = {}
    for key, entry in state["state"].items():
        out = {}
        for name, value in entry.items():
            if name == "step":
                count = int(value.item()) if isinstance(value, torch.Tensor) else int(value)
                out[name] = count if as_int else torch.tensor(float(count))
            elif isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == members:
                out[name] = value.index_select(0, rows).clone()
            else:
                out[name] = value
        sliced[key] = out
    groups = new.state_dict()["param_groups"]
    return {"state": sliced, "param_groups": groups}
