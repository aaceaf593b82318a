"""MoE PPO for S seeds x N environments at once: the SB3 path's algorithm with a seed dimension on one device.

Why: a study is hundreds of PPO runs of small networks, and the SB3 path (:class:`~moerl.rl.sb3.moe_ppo.MoEPPO`)
spends its time in Python per step and per seed. Here one Python step advances every environment of every
seed: the suites are the batched suites (:func:`~moerl.rl.envs.batched_suites.make_batched_suite`, classic and
MinAtar, ``S * n_envs`` environments, seed-major), actor and critic are
:class:`~moerl.rl.nets.batched.BatchedQNetwork`\\ s stacked from the per-seed networks of
:class:`~moerl.rl.nets.actor_critic.MoEActorCritic` (one network when ``shared``), so seed ``i`` starts from
the very weights the SB3 path builds for seed ``i`` (tested).

The algorithm is MoEPPO's, written once in :mod:`moerl.rl.algos.ppo`:

* a rollout of ``n_steps`` on every environment, actions sampled from the masked categorical policy (actions
  a task lacks have logit ``-inf``) by Gumbel-max with per-seed counter-stream uniforms
  (:class:`~moerl.core.seed_streams.SeedStreams`), never a global generator;
* truncation as the SB3 path treats it: ``V(final observation)`` bootstraps a truncated (not terminated)
  step (:func:`~moerl.rl.algos.ppo.gae`'s ``truncated_values``); the batched suites report the final
  observation and ``truncated`` beside the reset observation;
* :func:`~moerl.rl.algos.ppo.gae` over ``(T, S, N)``; then ``n_epochs`` passes of ``n_minibatches``
  minibatches, each seed with its own permutation (counter streams), each minibatch's loss
  :func:`~moerl.rl.algos.ppo.ppo_loss` over ``(S, B)`` plus the routers' balancing loss, per-seed gradient
  clipping (:func:`~moerl.rl.nets.batched.clip_grad_norm_per_seed`) and per-seed Adam (eps ``adam_eps``);
  the learning rate (``anneal_lr``) and clip range (``anneal_clip``) annealed on SB3's progress.

Rollout tensors are flattened per seed in SB3's order (environment-major, ``n * n_steps + t``, what
``RolloutBuffer.swap_and_flatten`` gives), so a permutation index names the same transition on both engines:
the update-equivalence test injects one permutation into both.

**Randomness differs from the SB3 path** (numpy's global permutation, torch's sampler, Gymnasium's env
seeds), so the engines agree statistically, not bitwise; a seed follows the same path alone or in any
batch up to float rounding in batched products (bit for bit beside any neighbour in a batch of one size).

**target_kl** as SB3 applies it, per seed: a seed whose minibatch's approximate KL exceeds 1.5 x
``target_kl`` takes no optimiser step from that minibatch on in this update (SB3 breaks out of its epochs), the
others go on; the optimiser is then :class:`~moerl.rl.nets.member_adam.MaskedMemberAdam` (a per-seed step
count and a masked step; torch's fused Adam keeps one count per tensor). The stopped seeds' minibatches are
still computed (no host read decides to skip them) and not counted in their diagnostics.

The host waits on the device only at boundaries: :meth:`BatchedPPO.advance` reads no device value on the
host (tested by making ``.item()``, ``.cpu()`` ... raise); diagnostics, MoE metrics and finished episodes wait
on the device until :meth:`BatchedPPO.sync_log`. Pure torch: neither Stable-Baselines3 nor Gymnasium.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from moerl.core.config import from_dict, to_dict
from moerl.core.cpu_allocator import keep_freed_memory
from moerl.core.denormals import flush_denormals
from moerl.core.errors import check_positive
from moerl.core.seed_streams import SeedStreams
from moerl.core.seeding import api_seeds, seeded
from moerl.core.threads import TRAINING_THREADS, torch_threads
from moerl.rl.algos.ppo import PPOHyperParams, gae, ppo_loss
from moerl.rl.engine.episode_log import ended_episodes
from moerl.rl.engine.greedy_eval import GreedyEvaluation
from moerl.rl.engine.members import check_distinct_members, check_member_settings
from moerl.rl.engine.seed_adam import seed_adam, set_lrs
from moerl.rl.engine.suite_input import env_seeds, suite_of
from moerl.rl.envs.batched_suites import make_batched_suite
from moerl.rl.nets.actor_critic import MoEActorCritic
from moerl.rl.nets.batched import BatchedQNetwork, BatchedRecord, clip_grad_norm_per_seed
from moerl.rl.nets.encoder import MoENetworkConfig, checked_network
from moerl.rl.nets.member_adam import MaskedMemberAdam
from moerl.rl.nets.obs_layout import check_layout_fits, layout_for_env
from moerl.rl.spec import SuiteSpec

#: Stream purposes (see :class:`SeedStreams`; the suites use 1 and 2, BatchedDQN's exploration 3).
_ACTION_STREAM = 5
_PERMUTATION_STREAM = 6

#: PPO settings the members of one batch may hold each their own (per-seed tensors where they differ).
PER_MEMBER = ("learning_rate", "adam_eps", "gamma", "gae_lambda")


def ppo_hyperparams(ppo: PPOHyperParams | dict[str, Any] | None) -> PPOHyperParams:
    """``ppo`` as checked settings (the object or a dict of its keys, read as a config's ``ppo:`` section)."""
    if ppo is None:
        return PPOHyperParams().validate()
    values = to_dict(ppo) if isinstance(ppo, PPOHyperParams) else ppo
    return from_dict(PPOHyperParams, values, "ppo.").validate()


@dataclass
class PPOTrainLog:
    """Per-seed training statistics gathered since the last :meth:`BatchedPPO.pop_log` (numpy).

    ``updates``: per update ``(env step, {name: (S,)})``: ``policy_loss``, ``value_loss``, ``entropy_loss``,
    ``entropy``, ``clip_fraction``, ``aux_loss`` (with a balancing loss) as means over the update's
    minibatches, ``approx_kl`` over its last epoch (SB3's ``train/*`` meanings), ``explained_variance`` of the
    rollout's values, ``learning_rate``. ``metrics``: ``(env step, {metric: (S,)})`` every ``metrics_interval``
    steps, keys ``actor/...``, ``critic/...`` (``shared/...``) as :meth:`ActorCriticRecord.metrics` names
    them. ``episodes``: per env step where some episode ended ``(env step, done, task, return, length)``,
    each ``(S, N)``.
    """

    updates: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    metrics: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    episodes: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def finished(self, seed_index: int) -> dict[str, np.ndarray]:
        """Seed ``seed_index``'s finished training episodes in order: ``step``, ``return``, ``length``, ``task``."""
        out: dict[str, list[Any]] = {"step": [], "return": [], "length": [], "task": []}
        for step, done, task, ret, length in self.episodes:
            ended = done[seed_index]
            out["step"].extend([step] * int(ended.sum()))
            out["return"].extend(ret[seed_index][ended])
            out["length"].extend(length[seed_index][ended])
            out["task"].extend(task[seed_index][ended])
        return {key: np.asarray(values) for key, values in out.items()}


@dataclass
class _PendingLog:
    """What :meth:`BatchedPPO.advance` logged, still on the device (see :class:`PPOTrainLog`)."""

    updates: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    metrics: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    episodes: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


@dataclass
class Rollout:
    """One rollout of every seed: ``(T, S, N, ...)`` tensors as collected, the advantages filled by
    :meth:`BatchedPPO.update`. ``truncated_values``: ``V(final observation)`` where a step was truncated
    (not terminated), else 0; ``last_values``: ``(S, N)`` ``V`` of the observation after the last step."""

    obs: torch.Tensor
    tasks: torch.Tensor | None
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    truncated_values: torch.Tensor
    last_values: torch.Tensor


def per_seed(x: torch.Tensor) -> torch.Tensor:
    """``(T, S, N, ...)`` -> ``(S, N * T, ...)`` in SB3's order (environment-major: index ``n * T + t``)."""
    t, s, n = x.shape[:3]
    return x.movedim(0, 2).reshape(s, n * t, *x.shape[3:])


def _rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Each seed's rows ``idx`` ``(S, B)`` of ``x`` ``(S, M, ...)`` -> ``(S, B, ...)``."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def _stacked(xs: list[torch.Tensor | None]) -> torch.Tensor | None:
    """``torch.stack`` of a list of tensors, or None for a list of Nones (a suite without task ids)."""
    present = [x for x in xs if x is not None]
    return torch.stack(present) if present else None


def categorical(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_prob of actions, entropy)`` of the categorical over masked ``logits`` (``-inf``: no action),
    as ``torch.distributions.Categorical`` computes them (its clamp keeps ``0 * -inf`` out of the entropy),
    without its argument checks (host reads)."""
    log_p = logits - logits.logsumexp(-1, keepdim=True)
    entropy = -(log_p.clamp(min=torch.finfo(log_p.dtype).min) * log_p.exp()).sum(-1)
    return log_p.gather(-1, actions[..., None])[..., 0], entropy


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """Per seed over the last dimension, SB3's ``explained_variance`` (biased variances; NaN where the returns
    do not vary)."""
    var_y = returns.var(-1, correction=0)
    ev = 1 - (returns - values).var(-1, correction=0) / var_y
    return torch.where(var_y == 0, torch.full_like(ev, float("nan")), ev)


class BatchedPPO(GreedyEvaluation):
    """S seeds of MoE PPO with ``n_envs`` environments each, trained together (see the module docstring).

    Args:
        suite: the task suite (a ``TaskSuiteEnv`` or ``MinAtarSuiteEnv``, also inside ``gym.make``'s checking
            wrappers), or one per member.
        seeds: one run per seed: distinct integers, or text as ``--seeds`` reads it (``"0-9"``).
        network: both heads' network, as ``MoEPPO``'s ``policy_kwargs["network"]``.
        ppo: the settings (:class:`PPOHyperParams` or a dict of its keys), or one per member; members may
            differ in :data:`PER_MEMBER` only.
        shared: one network for actor and critic (``n_actions + 1`` outputs), as ``policy_kwargs["shared"]``
            (also taken when the settings say ``shared_network``).
        device: where everything lives.
        metrics_interval: env steps (per seed) between MoE metrics of a training minibatch.
    """

    def __init__(self, suite: SuiteSpec | Sequence[SuiteSpec], seeds: str | Sequence[int],
                 network: MoENetworkConfig | dict[str, Any] | None = None,
                 ppo: PPOHyperParams | dict[str, Any] | Sequence[PPOHyperParams | dict[str, Any]] | None = None,
                 shared: bool = False, device: str | torch.device = "cpu", metrics_interval: int = 1000) -> None:
        members = isinstance(suite, Sequence) or isinstance(ppo, Sequence)
        self.seeds = api_seeds(seeds, distinct=not members)
        self.num_seeds = s = len(self.seeds)
        self.network_config = checked_network(network)
        check_positive("logging.metrics_interval", metrics_interval)
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
            flush_denormals()  # Adam's decayed moments: see moerl.core.denormals
        specs = ([suite_of(x, "BatchedPPO", "MoEPPO") for x in suite] if isinstance(suite, Sequence)
                 else [suite_of(suite, "BatchedPPO", "MoEPPO")] * s)
        hps = [ppo_hyperparams(p) for p in ppo] if isinstance(ppo, Sequence) else [ppo_hyperparams(ppo)] * s
        self.member_hp = check_member_settings(specs, hps, s, PER_MEMBER, "ppo")
        check_distinct_members(specs, hps, self.seeds)
        self.hp = hp = hps[0]
        self.n_envs, self.shared = hp.n_envs, bool(shared or hp.shared_network)
        self.env = make_batched_suite([spec for spec in specs for _ in range(hp.n_envs)],
                                      env_seeds(self.seeds, hp.n_envs), self.device)
        layout = layout_for_env(specs[0])
        check_layout_fits(self.network_config, layout, repr(specs[0]))
        self.n_actions = self.env.n_actions
        nets = []
        for seed in self.seeds:  # seed i's weights: MoEActorCritic built as the SB3 path builds it for seed i
            with seeded(seed):
                nets.append(MoEActorCritic(layout, self.n_actions, copy.deepcopy(self.network_config), self.shared))
        self.encoder = nets[0].encoder.to(self.device)
        self.actor = BatchedQNetwork([n.actor for n in nets]).to(self.device)
        self.critic = (None if self.shared else
                       BatchedQNetwork([n.critic for n in nets if n.critic is not None]).to(self.device))
        self.optimizer = (seed_adam(self.parameters(), [h.learning_rate for h in hps], [h.adam_eps for h in hps],
                                    self.device) if hp.target_kl is None else
                          MaskedMemberAdam(self.parameters(), torch.tensor([h.learning_rate for h in hps], device=self.device),
                                           torch.tensor([h.adam_eps for h in hps], device=self.device)))
        self._gamma = self._member_value([h.gamma for h in hps])
        self._gae_lambda = self._member_value([h.gae_lambda for h in hps])
        self._actions = SeedStreams(self.seeds, _ACTION_STREAM, self.device)
        self._permutations = SeedStreams(self.seeds, _PERMUTATION_STREAM, self.device)
        config = self.network_config
        self.use_aux = hp.aux_loss_coef > 0 and config.uses_moe and config.balance_loss != "none"
        self.metrics_interval = metrics_interval
        self.num_timesteps = 0  # env steps per seed (each seed's n_envs environments), as SB3 counts them
        self.n_updates = 0  # epochs, as SB3's ``_n_updates``
        self._last_metrics_step = -metrics_interval
        self.log = PPOTrainLog()
        self._pending = _PendingLog()
        self._obs: torch.Tensor | None = None
        self._stop = False

    def _member_value(self, values: list[float]) -> float | torch.Tensor:
        """A shared float, or ``(S, 1)`` float32 (broadcast over ``(..., S, N)``) where members differ."""
        if len(set(values)) == 1:
            return values[0]
        return torch.tensor(values, dtype=torch.float32, device=self.device)[:, None]

    def parameters(self) -> list[torch.nn.Parameter]:
        """Every trained tensor: the actor's, then the critic's."""
        return [*self.actor.parameters(), *([] if self.critic is None else self.critic.parameters())]

    # ------------------------------------------------------------------ the network
    def forward(self, obs: torch.Tensor, task: torch.Tensor | None = None, record: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, BatchedRecord] | None]:
        """``obs`` ``(S, B, obs_dim)`` -> (masked logits ``(S, B, A)``, values ``(S, B)``, the records of
        both heads as ``{"actor", "critic"}`` or ``{"shared"}`` when ``record``), in the current mode."""
        feats, task = self.encoder.split(obs, task)
        records: dict[str, BatchedRecord] = {}
        if record:
            out, records["shared" if self.critic is None else "actor"] = self.actor.forward_record(feats, task)
        else:
            out = self.actor(feats, task)
        if self.critic is None:
            logits, values = out[..., :self.n_actions], out[..., self.n_actions]
        elif record:
            critic_out, records["critic"] = self.critic.forward_record(feats, task)
            logits, values = out, critic_out[..., 0]
        else:
            logits, values = out, self.critic(feats, task)[..., 0]
        if self.encoder.layout.valid_actions is not None:
            logits = logits.masked_fill(~self.encoder.task_mask(task, logits.shape[:-1]), float("-inf"))
        return logits, values, records if record else None

    def _policy_scores(self, feats: torch.Tensor, task: torch.Tensor | None,
                       record: bool = False) -> tuple[torch.Tensor, BatchedRecord | None]:
        """The actor's logits (greedy PPO: their masked argmax), in evaluation mode; with ``record``, the
        routing of both heads under the SB3 path's evaluation names ``actor.<layer>`` and ``critic.<layer>``
        (``shared.<layer>``), as ``MoEPPO.moe_metrics`` gives them to ``eval_usage.csv``."""
        self._mode(False)
        if record:
            out, rec = self.actor.forward_record(feats, task)
            heads = {"shared" if self.critic is None else "actor": rec}
            if self.critic is not None:
                heads["critic"] = self.critic.forward_record(feats, task)[1]
            routing = {f"{head}.{name}": r for head, part in heads.items() for name, r in part.routing.items()}
            return out[..., :self.n_actions], BatchedRecord(self.num_seeds, routing, {})
        return self.actor(feats, task)[..., :self.n_actions], None

    def _mode(self, training: bool) -> None:
        self.actor.train(training)
        if self.critic is not None:
            self.critic.train(training)

    def _values(self, obs: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return self.forward(obs, task)[1]

    @torch.no_grad()
    def predict(self, obs: torch.Tensor) -> torch.Tensor:
        """Greedy actions ``(S, B)`` of observations ``(S, B, obs_dim)`` (SB3's ``deterministic=True``)."""
        return self.greedy_actions(torch.as_tensor(obs, device=self.device))

    # ------------------------------------------------------------------ the loop
    def learn(self, total_timesteps: int, schedule_timesteps: int | None = None, *,
              threads: int | None = TRAINING_THREADS) -> BatchedPPO:
        """Train every seed until ``num_timesteps`` reaches ``total_timesteps`` (whole rollouts, as SB3),
        then gather the log (the boundary).

        ``schedule_timesteps``: the run's total when it is trained in chunks (the learning-rate anneal
        follows the run); default ``total_timesteps``. ``threads``: torch threads while it runs (one by
        default, as ``moerl train``; None keeps the caller's).
        """
        with torch_threads(threads):
            self.advance(total_timesteps, schedule_timesteps)
            self.sync_log()
        return self

    def advance(self, total_timesteps: int, schedule_timesteps: int | None = None) -> BatchedPPO:
        """:meth:`learn` without its boundary: rollouts and updates that never read a device value on the host."""
        check_positive("total_timesteps", total_timesteps)
        if self._obs is None:
            self._obs = self.env.reset().reshape(self.num_seeds, self.n_envs, -1)
        self._stop = False
        while self.num_timesteps < total_timesteps and not self._stop:
            rollout = self.collect()
            self.update(rollout, schedule_timesteps or total_timesteps)
        return self

    def _task(self) -> torch.Tensor | None:
        """``(S, N)`` the task of each environment's current observation (None without task one-hots)."""
        return self.env.task.reshape(self.num_seeds, self.n_envs) if self.encoder.layout.num_tasks else None

    @torch.no_grad()
    def collect(self) -> Rollout:
        """One rollout of ``n_steps`` on every environment (advances :attr:`num_timesteps`)."""
        assert self._obs is not None, "advance() resets the environments first"
        s, n, steps = self.num_seeds, self.n_envs, self.hp.n_steps
        self._mode(False)  # as SB3's collect_rollouts (``policy.set_training_mode(False)``): no topk noise
        obs, tasks, actions, log_probs, values, rewards, dones, truncated, finals, final_tasks = ([] for _ in range(10))
        for _ in range(steps):
            task = self._task()
            logits, value, _ = self.forward(self._obs, task)
            u = self._actions.uniform(n, self.n_actions)  # (S, N, A)
            action = (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max: a draw from softmax(logits)
            out = self.env.step(action.reshape(-1), validate=False)
            self.num_timesteps += n
            shape = (s, n)
            obs.append(self._obs)
            tasks.append(task)
            actions.append(action)
            log_probs.append(categorical(logits, action)[0])
            values.append(value)
            rewards.append(out.reward.reshape(shape))
            dones.append(out.done.reshape(shape))
            truncated.append(out.truncated.reshape(shape))
            finals.append(out.final_obs.reshape(s, n, -1))
            final_tasks.append(out.task_id.reshape(shape))
            self._pending.episodes.append((self.num_timesteps, out.done.reshape(shape), out.task_id.reshape(shape),
                                           out.episode_return.reshape(shape), out.episode_length.reshape(shape)))
            self._obs = out.obs.reshape(s, n, -1)
        last_values = self._values(self._obs, self._task())
        # V(final observation) in one pass over the rollout (the weights did not change during it), kept
        # where a step was truncated: the batched suites report terminated and truncated apart.
        final_obs = torch.stack(finals).movedim(0, 1).reshape(s, steps * n, -1)
        final_task = None if tasks[0] is None else torch.stack(final_tasks).movedim(0, 1).reshape(s, steps * n)
        final_values = self._values(final_obs, final_task).reshape(s, steps, n).movedim(1, 0)
        trunc = torch.stack(truncated)
        return Rollout(torch.stack(obs), _stacked(tasks), torch.stack(actions),
                       torch.stack(log_probs), torch.stack(values), torch.stack(rewards), torch.stack(dones),
                       torch.where(trunc, final_values, torch.zeros_like(final_values)), last_values)

    def draw_permutations(self) -> torch.Tensor:
        """``(S, n_epochs, n_envs * n_steps)`` each seed's minibatch order per epoch (its counter stream)."""
        bits = self._permutations.bits(self.hp.n_epochs, self.n_envs * self.hp.n_steps)
        return torch.argsort(bits, dim=-1, stable=True)

    def learning_rates(self, total_timesteps: int) -> list[float]:
        """Each member's learning rate for the update after a rollout: SB3's ``LinearSchedule(lr, 0, 1)`` of
        its progress ``1 - num_timesteps / total_timesteps`` with ``anneal_lr``, else the constant."""
        if not self.hp.anneal_lr:
            return [h.learning_rate for h in self.member_hp]
        done = 1.0 - (1.0 - float(self.num_timesteps) / float(total_timesteps))
        return [0.0 if done > 1.0 else h.learning_rate + done * (0.0 - h.learning_rate) / 1.0 for h in self.member_hp]

    def clip_range(self, total_timesteps: int) -> float:
        """The surrogate's clip range for the update after a rollout: annealed as :meth:`learning_rates` with
        ``anneal_clip`` (the same float arithmetic as SB3's ``LinearSchedule``), else the constant."""
        if not self.hp.anneal_clip:
            return self.hp.clip_range
        done = 1.0 - (1.0 - float(self.num_timesteps) / float(total_timesteps))
        return 0.0 if done > 1.0 else self.hp.clip_range + done * (0.0 - self.hp.clip_range) / 1.0

    def update(self, rollout: Rollout, total_timesteps: int, permutations: torch.Tensor | None = None) -> None:
        """``n_epochs`` x ``n_minibatches`` PPO updates of every seed on ``rollout`` (see the module docs).

        ``permutations``: ``(S, n_epochs, n_envs * n_steps)`` minibatch orders to use instead of drawing them
        (the update-equivalence test injects SB3's)."""
        hp = self.hp
        lrs = self.learning_rates(total_timesteps)
        set_lrs(self.optimizer, lrs)
        clip_range = self.clip_range(total_timesteps)
        advantages, returns = gae(rollout.rewards, rollout.values, rollout.dones, rollout.last_values,
                                  self._gamma, self._gae_lambda,  # type: ignore[arg-type]  # (S, 1) broadcasts
                                  truncated_values=rollout.truncated_values)
        flat = {"obs": per_seed(rollout.obs), "actions": per_seed(rollout.actions),
                "old_log_prob": per_seed(rollout.log_probs), "old_values": per_seed(rollout.values),
                "advantages": per_seed(advantages), "returns": per_seed(returns)}
        if rollout.tasks is not None:
            flat["tasks"] = per_seed(rollout.tasks)
        order = self.draw_permutations() if permutations is None else permutations
        want_metrics = self.num_timesteps - self._last_metrics_step >= self.metrics_interval
        self._mode(True)
        sums: dict[str, list[torch.Tensor]] = {}
        kls: list[torch.Tensor] = []
        # target_kl: the seeds still updating (SB3 breaks out of a seed's epochs before the optimiser step of
        # the minibatch whose approximate KL exceeds 1.5 x target_kl); each minibatch's diagnostics count for
        # the seeds that computed it (``counted``), and approx_kl is the mean over each seed's last epoch
        limit = None if hp.target_kl is None else 1.5 * hp.target_kl
        masked = self.optimizer if isinstance(self.optimizer, MaskedMemberAdam) else None
        kl_stop = limit is not None
        active = torch.ones(self.num_seeds, dtype=torch.bool, device=self.device)
        counted: list[torch.Tensor] = []
        last_kl = torch.zeros(self.num_seeds, device=self.device)
        b = hp.batch_size
        for epoch in range(hp.n_epochs):
            kls = []
            entered, first = active, len(counted)
            for k in range(hp.n_minibatches):
                idx = order[:, epoch, k * b:(k + 1) * b]
                mb = {key: _rows(value, idx) for key, value in flat.items()}
                record = self.use_aux or want_metrics
                logits, values, records = self.forward(mb["obs"], mb.get("tasks"), record=record)
                log_prob, entropy = categorical(logits, mb["actions"])
                aux = (torch.stack([r.aux_loss() for r in records.values()]).sum(0)
                       if self.use_aux and records else None)
                loss, diag = ppo_loss(
                    log_prob, mb["old_log_prob"], mb["advantages"], values, mb["old_values"], mb["returns"],
                    entropy, clip_range=clip_range, ent_coef=hp.ent_coef, vf_coef=hp.vf_coef,
                    normalize_advantage=hp.normalize_advantage, clip_range_vf=hp.clip_range_vf,
                    value_clip=hp.value_clip, aux_loss=aux, aux_loss_coef=hp.aux_loss_coef)
                if want_metrics and records:
                    self._last_metrics_step = self.num_timesteps
                    self._pending.metrics.append((self.num_timesteps, {
                        f"{part}/{key}": value.detach() for part, rec in records.items()
                        for key, value in rec.metrics().items()}))
                    want_metrics = False
                for key, value in diag.items():
                    sums.setdefault(key, []).append(value)
                kls.append(diag["approx_kl"])
                if limit is not None:
                    counted.append(active)
                    active = active & ~(diag["approx_kl"].detach() > limit)
                self.optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                clip_grad_norm_per_seed(self.parameters(), hp.max_grad_norm)
                if masked is not None:
                    masked.step(active=active)
                else:
                    self.optimizer.step()
            if kl_stop:
                weights = torch.stack(counted[first:]).float()
                epoch_kl = (torch.stack(kls).detach() * weights).sum(0) / weights.sum(0).clamp(min=1)
                last_kl = torch.where(entered, epoch_kl, last_kl)
            self.n_updates += 1
        with torch.no_grad():
            if kl_stop:
                weights = torch.stack(counted).float()
                out = {key: (torch.stack(values) * weights).sum(0) / weights.sum(0)
                       for key, values in sums.items()}
                out["approx_kl"] = last_kl
            else:
                out = {key: torch.stack(values).mean(0) for key, values in sums.items()}
                out["approx_kl"] = torch.stack(kls).mean(0)
            out["explained_variance"] = explained_variance(flat["old_values"], flat["returns"])
            out["learning_rate"] = torch.tensor(lrs, device=self.device)
            out["clip_range"] = torch.full_like(out["learning_rate"], clip_range)
        self._pending.updates.append((self.num_timesteps, out))

    def request_stop(self) -> None:
        """Ask :meth:`learn` to return after the current rollout's update (a rollout boundary: a state an
        uninterrupted run also passes through, so a checkpoint taken there resumes exactly)."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

    # ------------------------------------------------------------------ checkpoints and logs
    def state_dict(self) -> dict[str, Any]:
        """Everything the rest of training depends on (taken at a rollout boundary: between calls)."""
        self.sync_log()
        return copy.deepcopy({
            "actor": self.actor.state_dict(), "critic": None if self.critic is None else self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(), "env": self.env.state_dict(), "obs": self._obs,
            "actions": self._actions.state_dict(), "permutations": self._permutations.state_dict(),
            "num_timesteps": self.num_timesteps, "n_updates": self.n_updates, "log": self.log,
            "last_metrics_step": self._last_metrics_step,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of an engine built with the same suite, seeds and settings."""
        self.actor.load_state_dict(state["actor"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env.load_state_dict(state["env"])
        self._obs = None if state["obs"] is None else state["obs"].to(self.device)
        self._actions.load_state_dict(state["actions"])
        self._permutations.load_state_dict(state["permutations"])
        self.num_timesteps, self.n_updates = int(state["num_timesteps"]), int(state["n_updates"])
        self.log = copy.deepcopy(state["log"])
        self._last_metrics_step = int(state["last_metrics_step"])

    def pop_log(self) -> PPOTrainLog:
        """What training gathered since the last call, and start a new log."""
        self.sync_log()
        log, self.log = self.log, PPOTrainLog()
        return log

    def sync_log(self) -> None:
        """The boundary: move what :meth:`advance` logged on the device into :attr:`log` (numpy)."""
        pending, self._pending = self._pending, _PendingLog()
        for kind in ("updates", "metrics"):
            for step, values in getattr(pending, kind):
                getattr(self.log, kind).append((step, {k: v.cpu().numpy() for k, v in values.items()}))
        self.log.episodes.extend(ended_episodes(pending.episodes, self.device))


__all__ = ["PER_MEMBER", "BatchedPPO", "PPOTrainLog", "Rollout", "categorical", "explained_variance", "per_seed",
           "ppo_hyperparams"]
