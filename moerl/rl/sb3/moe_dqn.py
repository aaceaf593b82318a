"""MoE DQN: Stable-Baselines3's DQN with an MoE Q-network, its auxiliary loss and its metrics.

A subclass, not a fork: SB3 keeps the replay buffer, exploration schedule, target updates,
logging and save/load. We change what the MoE study needs:

* the TD loss (``mse`` as dopamine's classic-control DQN, or SB3's ``huber``) plus the router's
  auxiliary balancing loss times ``aux_loss_coef``;
* action masks: in a suite where a task lacks an action, greedy choices, TD targets and random
  exploration only ever use the task's valid actions;
* MoE metrics (dormant neurons, per-expert usage, router entropy, aux loss) computed on the
  training batch every ``metrics_interval`` env steps and sent to SB3's logger, hence TensorBoard.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule

from moerl.core.config import from_dict
from moerl.core.errors import ConfigError, check_positive
from moerl.core.seeding import check_seed
from moerl.core.threads import TRAINING_THREADS, torch_threads
from moerl.nn import ForwardRecord, forward_metrics
from moerl.rl.algos.dqn import (
    DEFAULT_BUFFER_SIZE,
    LOSSES,
    DQNHyperParams,
    default_capacity,
    optimizer_of,
    td_loss,
    td_target,
    total_loss,
)
from moerl.rl.envs.attributes import suite_info
from moerl.rl.nets.encoder import checked_network
from moerl.rl.nets.obs_layout import layout_for_env
from moerl.rl.record import AUX_LOSS_TAG, LOSS_TAG, moe_tag
from moerl.rl.sb3.policy import MoEDQNPolicy

_D = DQNHyperParams()
def default_buffer_size(env: Any) -> int:
    """Dopamine's 50k, or one CRL block when ``env`` is a CRL suite with shorter blocks (see
    :attr:`DQNHyperParams.buffer_size`)."""
    if env is None:
        return default_capacity(None)
    info = suite_info(env)
    return default_capacity(info.block_steps if info.schedule else None)


def check_policy(policy: Any) -> None:
    """``"MoEPolicy"`` or a :class:`MoEDQNPolicy` class, else one line: SB3's ``"MlpPolicy"`` would silently be
    an MoE network, and a plain DQN's ``DQNPolicy`` (``MoEDQN.load`` of a ``stable_baselines3.DQN`` zip) a
    "MoEDQN" without MoE, its metrics or its action masks."""
    if isinstance(policy, str):
        if policy not in MoEDQN.policy_aliases:
            raise ConfigError(
                f"unknown policy '{policy}' for MoEDQN; valid choices: MoEPolicy "
                "(a plain MLP is the default network, arch 'dense')"
            )
    elif not (isinstance(policy, type) and issubclass(policy, MoEDQNPolicy)):
        name = getattr(policy, "__name__", repr(policy))
        raise ConfigError(
            f"MoEDQN needs the policy MoEPolicy (MoEDQNPolicy), got {name}; a model saved by "
            "stable_baselines3.DQN loads with stable_baselines3.DQN.load"
        )


def check_arguments(arguments: dict[str, Any]) -> None:
    """Refuse what ``moerl train`` refuses, with its line: the one check of the ``dqn:`` section
    (:meth:`DQNHyperParams.validate`), of the ``network:`` section (:func:`checked_network`) and of the seed.

    ``arguments``: :class:`MoEDQN`'s arguments by name. SB3's extensions the CLI has no key for are passed
    through: a learning-rate schedule (a callable) and ``train_freq`` as ``(n, unit)`` (``n`` is checked).
    """
    values: dict[str, Any] = {f.name: arguments[f.name] for f in fields(DQNHyperParams)}
    if callable(values["learning_rate"]):
        del values["learning_rate"]
    if isinstance(values["train_freq"], tuple):
        values["train_freq"] = values["train_freq"][0]
    values = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
    from_dict(DQNHyperParams, values, "dqn.").validate()
    check_positive("logging.metrics_interval", arguments["metrics_interval"])
    if arguments["seed"] is not None:
        check_seed(arguments["seed"])
    network = (arguments["policy_kwargs"] or {}).get("network")
    if network is not None:
        checked_network(network)


class MoEDQN(DQN):
    """DQN whose Q-network is a mixture of experts (see :class:`MoEDQNPolicy`), with moerl's defaults.

    The policy is ``"MoEPolicy"`` (or the class :class:`MoEDQNPolicy`); SB3's ``"MlpPolicy"`` is refused
    rather than silently built as an MoE network: a plain MLP is ``policy_kwargs={"network": {"arch":
    "dense"}}``, which is also the default network.

    The arguments are checked as ``moerl train`` checks its config, by the same functions, before anything
    is built: a bad value is a :class:`~moerl.core.errors.ConfigError` with the CLI's line. :meth:`learn`
    runs on the CLI's torch thread count (one) unless told otherwise (``threads=``).

    :param policy: ``"MoEPolicy"`` or :class:`MoEDQNPolicy`.
    :param env: the environment (a Gymnasium env, its id, or an SB3 VecEnv). moerl's task suites declare
        their layout (task one-hot, input bounds, valid actions), which the policy reads from here.
    :param learning_rate: Adam learning rate (constant or a schedule).
    :param buffer_size: replay capacity; None = 50k, or one block on a CRL suite with shorter blocks.
    :param learning_starts: env steps of uniform random (valid) actions before learning starts.
    :param batch_size: minibatch size per gradient step.
    :param tau: soft update coefficient (1 = hard target updates, dopamine's and SB3's default).
    :param gamma: discount factor.
    :param train_freq: env steps between updates.
    :param gradient_steps: gradient steps per update.
    :param replay_buffer_class: SB3 replay buffer class (None: SB3's ``ReplayBuffer``).
    :param replay_buffer_kwargs: keyword arguments of the replay buffer.
    :param optimize_memory_usage: SB3's memory-efficient replay buffer.
    :param n_steps: n-step returns (1: plain DQN).
    :param target_update_interval: env steps between target-network updates.
    :param exploration_fraction: fraction of training over which epsilon is annealed.
    :param exploration_initial_eps: initial epsilon (dopamine's classic control: constant 0.01).
    :param exploration_final_eps: final epsilon.
    :param max_grad_norm: gradient clipping norm (1e9: effectively none, as dopamine).
    :param stats_window_size: episodes averaged for ``rollout/*`` logs.
    :param tensorboard_log: TensorBoard log directory (None: none).
    :param policy_kwargs: keyword arguments of :class:`MoEDQNPolicy`: ``network`` (arch, router, experts,
        topk, hidden, ...), ``obs_layout`` (read from ``env`` when absent), ``optimizer_kwargs``.
    :param verbose: 0 none, 1 info, 2 debug.
    :param seed: seed of the run (python, numpy, torch and the env; SB3's ``set_random_seed``).
    :param device: ``auto`` (the GPU when torch sees one, as SB3), ``cpu`` or ``cuda``.
    :param loss: TD loss, ``mse`` (dopamine) or ``huber`` (SB3).
    :param aux_loss_coef: weight of the router's balancing loss, when the network has one.
    :param adam_eps: Adam's epsilon, unless ``policy_kwargs["optimizer_kwargs"]`` sets it.
    :param optimizer: ``adam`` or ``rmsprop`` (MinAtar's DQN's centered RMSprop), as the batched engine builds it
        (:func:`~moerl.rl.algos.dqn.optimizer_of`), unless ``policy_kwargs["optimizer_class"]`` is given.
    :param metrics_interval: env steps between MoE metric computations (dormant neurons, router usage).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MoEPolicy": MoEDQNPolicy}
    policy: MoEDQNPolicy

    def __init__(
        self,
        policy: str | type[MoEDQNPolicy] = "MoEPolicy",
        env: Any = None,
        learning_rate: float | Schedule = _D.learning_rate,
        buffer_size: int | None = _D.buffer_size,
        learning_starts: int = _D.learning_starts,
        batch_size: int = _D.batch_size,
        tau: float = 1.0,
        gamma: float = _D.gamma,
        train_freq: int | tuple[int, str] = _D.train_freq,
        gradient_steps: int = _D.gradient_steps,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        target_update_interval: int = _D.target_update_interval,
        exploration_fraction: float = _D.exploration_fraction,
        exploration_initial_eps: float = _D.exploration_initial_eps,
        exploration_final_eps: float = _D.exploration_final_eps,
        max_grad_norm: float = _D.max_grad_norm,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        loss: str = _D.loss,
        aux_loss_coef: float = _D.aux_loss_coef,
        adam_eps: float = _D.adam_eps,
        optimizer: str = _D.optimizer,
        metrics_interval: int = 1000,
    ):
        arguments = dict(locals())  # the arguments as given, before anything below rebinds a name
        check_policy(policy)
        if _init_setup_model:  # a user's call; ``load`` builds with defaults, then restores what was saved
            check_arguments(arguments)
        self.loss = LOSSES.check(loss)
        self.aux_loss_coef = aux_loss_coef
        self.metrics_interval = metrics_interval
        self._last_metrics_step = -metrics_interval
        policy_kwargs = dict(policy_kwargs or {})
        optimizer_kwargs = dict(policy_kwargs.get("optimizer_kwargs") or {})
        # The optimiser both engines build (moerl.rl.algos.dqn.optimizer_of); what the caller passes wins.
        optimizer_class, defaults = optimizer_of(DQNHyperParams(adam_eps=adam_eps, optimizer=optimizer))
        for key, value in defaults.items():
            optimizer_kwargs.setdefault(key, value)
        if optimizer_class is not torch.optim.Adam:  # Adam is SB3's default: its models' kwargs stay as they were
            policy_kwargs.setdefault("optimizer_class", optimizer_class)
        policy_kwargs["optimizer_kwargs"] = optimizer_kwargs
        super().__init__(
            policy, env, learning_rate=learning_rate, buffer_size=buffer_size or DEFAULT_BUFFER_SIZE,
            learning_starts=learning_starts, batch_size=batch_size, tau=tau, gamma=gamma, train_freq=train_freq,
            gradient_steps=gradient_steps, replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs, optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps, target_update_interval=target_update_interval,
            exploration_fraction=exploration_fraction, exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps, max_grad_norm=max_grad_norm,
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs,
            verbose=verbose, seed=seed, device=device, _init_setup_model=False,
        )
        if self.env is not None:
            if buffer_size is None:
                self.buffer_size = default_buffer_size(self.env)
            if self.policy_kwargs.get("obs_layout") is None:
                self.policy_kwargs["obs_layout"] = layout_for_env(self.env).to_dict()
        #: Total env steps of the whole run, when ``learn`` is called in several chunks (checkpoints): the
        #: exploration and learning-rate schedules then follow the run, not the chunk.
        self.schedule_timesteps: int | None = None
        self._stop_requested = False
        #: Logger values carried by a checkpoint until the new logger exists (see dqn_checkpoint).
        self._pending_log: dict[str, Any] | None = None
        #: ``(step, tag, value)`` of every MoE metric since the last :meth:`pop_metrics` (for ``metrics.csv``).
        self._metric_rows: list[tuple[int, str, float]] = []
        if _init_setup_model:
            self._setup_model()

    # --- chunked training and clean stops -----------------------------------------------------------
    def request_stop(self) -> None:
        """Ask ``learn`` to return at the next rollout boundary, where the state is whole (for checkpoints).

        Called from a signal handler: the current rollout (``train_freq`` env steps) and its gradient steps
        finish first, so the state saved afterwards is one an uninterrupted run also passes through.
        """
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def collect_rollouts(self, *args: Any, **kwargs: Any):
        if self._stop_requested:
            from stable_baselines3.common.type_aliases import RolloutReturn

            return RolloutReturn(0, 0, continue_training=False)
        return super().collect_rollouts(*args, **kwargs)

    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 4, tb_log_name: str = "DQN",
              reset_num_timesteps: bool = True, progress_bar: bool = False, *,
              threads: int | None = TRAINING_THREADS) -> MoEDQN:
        """SB3's ``learn``, with torch on ``threads`` threads while it runs (the caller's count is restored
        afterwards, also when learning raises).

        The default is the thread count ``moerl train`` uses (:data:`~moerl.core.threads.TRAINING_THREADS`,
        one): these small networks run many times slower on torch's default of one thread per core.
        ``threads=None`` opts out and keeps whatever ``torch.set_num_threads`` the caller chose.
        """
        with torch_threads(threads):
            return super().learn(total_timesteps, callback=callback, log_interval=log_interval,
                                 tb_log_name=tb_log_name, reset_num_timesteps=reset_num_timesteps,
                                 progress_bar=progress_bar)

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any):
        total, callback = super()._setup_learn(total_timesteps, *args, **kwargs)
        if self.schedule_timesteps is not None:
            self._total_timesteps = self.schedule_timesteps
        return total, callback

    # --- exploration -------------------------------------------------------------------------
    def _obs_batch(self, observations: Any) -> torch.Tensor:
        shape = tuple(self.observation_space.shape or ())
        return torch.as_tensor(np.asarray(observations), device=self.device).reshape(-1, *shape)

    def _random_actions(self, observation: Any) -> np.ndarray:
        """Uniform random actions among those valid for each observation's task."""
        obs = self._obs_batch(observation)
        with torch.no_grad():
            mask = self.policy.q_net.action_mask(obs).cpu().numpy()
        return np.array([np.random.choice(np.flatnonzero(row)) for row in mask])

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        if not deterministic and np.random.rand() < self.exploration_rate:
            vectorised = self.policy.is_vectorized_observation(observation)
            actions = self._random_actions(observation)
            return (actions if vectorised else actions[0]), state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        if self.num_timesteps < learning_starts and not (self.use_sde and self.use_sde_at_warmup):
            action = self._random_actions(self._last_obs)
            return action, action
        return super()._sample_action(learning_starts, action_noise, n_envs)

    # --- learning ----------------------------------------------------------------------------
    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        q_net, q_target = self.policy.q_net, self.policy.q_net_target
        losses, aux_losses = [], []
        want_metrics = self.num_timesteps - self._last_metrics_step >= self.metrics_interval
        use_aux = self.aux_loss_coef > 0 and q_net.network_config.balance_loss != "none"
        for step in range(gradient_steps):
            assert self.replay_buffer is not None
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            with torch.no_grad():  # one member (S = 1) of the loss the batched engine computes for S
                next_q = q_target.masked(q_target(data.next_observations), data.next_observations)
                target = td_target(next_q[None], data.rewards[None, :, 0], data.dones[None, :, 0],
                                   discounts if isinstance(discounts, float) else discounts[None, :, 0])
            record = ForwardRecord() if (use_aux or (want_metrics and step == 0)) else None
            q_all = q_net(data.observations, record)
            td = td_loss(q_all[None], data.actions.long()[None, :, 0], target, self.loss)
            aux = record.aux_loss() if record is not None and use_aux else None
            loss = total_loss(td, None if aux is None else aux.reshape(1), self.aux_loss_coef)
            if aux is not None:
                aux_losses.append(aux.item())
            losses.append(td.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if want_metrics and step == 0 and record is not None:
                self._log_metrics(record)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record(LOSS_TAG, float(np.mean(losses)))
        if aux_losses:
            self.logger.record(AUX_LOSS_TAG, float(np.mean(aux_losses)))

    def _log_metrics(self, record: ForwardRecord) -> None:
        self._last_metrics_step = self.num_timesteps
        for key, value in forward_metrics(record).items():
            self.logger.record(moe_tag(key), value)
            self._metric_rows.append((self.num_timesteps, moe_tag(key), float(value)))

    def pop_metrics(self) -> list[tuple[int, str, float]]:
        """The MoE metrics measured since the last call, as ``(env step, tag, value)``, and start anew.

        The values sent to TensorBoard as ``moe/*``, kept for a plain file too (a report reads files, not
        event logs); reading them draws nothing random and changes nothing that trains.
        """
        rows, self._metric_rows = self._metric_rows, []
        return rows

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_metrics_step", "_stop_requested", "schedule_timesteps",
                "_pending_log", "_metric_rows"]

    def moe_metrics(self, observations: np.ndarray) -> dict[str, float]:
        """MoE metrics of the online network on any batch of observations (no gradient)."""
        obs = self._obs_batch(observations)
        record = ForwardRecord()
        self.policy.set_training_mode(False)
        with torch.no_grad():
            self.policy.q_net(obs, record)
        return forward_metrics(record)

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        """Q-values of the online network (used for save/load checks and analysis)."""
        obs = self._obs_batch(observations)
        self.policy.set_training_mode(False)
        with torch.no_grad():
            return self.policy.q_net(obs).cpu().numpy()
