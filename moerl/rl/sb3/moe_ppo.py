"""MoE PPO: Stable-Baselines3's PPO with an MoE actor-critic, its balancing loss and its metrics.

A subclass, not a fork: SB3 keeps the rollout collection (and its bootstrap of truncated episodes), the
rollout buffer with its GAE, the minibatch permutation (drawn from numpy's global generator), callbacks,
logging and save/load. What changes:

* the policy is :class:`~moerl.rl.sb3.ppo_policy.MoEActorCriticPolicy` (actions a task lacks get no
  probability; the ``hardcoded`` router reads the task id);
* ``train`` computes each minibatch's loss with :func:`moerl.rl.algos.ppo.ppo_loss`, the function the batched
  engine calls, at S = 1, plus the routers' balancing loss; SB3's optimiser step, gradient clipping and early
  stop on ``target_kl`` stay as SB3 writes them;
* the defaults are PureJaxRL's classic-control PPO (:class:`~moerl.rl.algos.ppo.PPOHyperParams`), with
  ``n_minibatches`` (PureJaxRL's knob) setting SB3's ``batch_size`` unless that is given;
* MoE metrics of both heads (dormant neurons, router usage and entropy, balancing loss) are computed on a
  training minibatch every ``metrics_interval`` env steps and sent to SB3's logger as ``moe/actor/...`` and
  ``moe/critic/...`` (``moe/shared/...`` for one shared network).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import LinearSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv

from moerl.core.config import from_dict
from moerl.core.errors import ConfigError, check_positive
from moerl.core.seeding import check_seed
from moerl.core.threads import TRAINING_THREADS, torch_threads
from moerl.rl.algos.ppo import PPOHyperParams, ppo_loss
from moerl.rl.nets.actor_critic import ActorCriticRecord
from moerl.rl.nets.encoder import checked_network
from moerl.rl.nets.obs_layout import layout_for_env
from moerl.rl.record import AUX_LOSS_TAG, moe_tag
from moerl.rl.sb3.ppo_policy import MoEActorCriticPolicy

_D = PPOHyperParams()


def check_arguments(arguments: dict[str, Any]) -> None:
    """The settings (:meth:`PPOHyperParams.validate`, schedules passed through), the network and the seed,
    refused with a :class:`ConfigError` line as :class:`~moerl.rl.sb3.moe_dqn.MoEDQN` refuses its own."""
    values = {f.name: arguments[f.name] for f in fields(PPOHyperParams) if f.name in arguments}
    values = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items() if not callable(v)}
    from_dict(PPOHyperParams, values, "ppo.").validate()
    if arguments["batch_size"] is not None:
        check_positive("ppo.batch_size", arguments["batch_size"])
        if arguments["n_minibatches"] != _D.n_minibatches:
            raise ConfigError("give batch_size or n_minibatches, not both (n_minibatches sets batch_size to "
                              "n_envs x n_steps / n_minibatches)")
    if arguments["n_envs"] != _D.n_envs and not isinstance(arguments["env"], str):
        raise ConfigError("n_envs applies when env is an id (MoEPPO builds the environments); this env brings its "
                          "own number of environments")
    check_positive("logging.metrics_interval", arguments["metrics_interval"])
    if arguments["seed"] is not None:
        check_seed(arguments["seed"])
    network = (arguments["policy_kwargs"] or {}).get("network")
    if network is not None:
        checked_network(network)


def check_policy(policy: Any) -> None:
    """``"MoEPolicy"`` or a :class:`MoEActorCriticPolicy` class, else one line (SB3's ``"MlpPolicy"`` would not
    be an MoE network)."""
    if isinstance(policy, str):
        if policy not in MoEPPO.policy_aliases:
            raise ConfigError(f"unknown policy '{policy}' for MoEPPO; valid choices: MoEPolicy "
                              "(a plain MLP is the default network, arch 'dense')")
    elif not (isinstance(policy, type) and issubclass(policy, MoEActorCriticPolicy)):
        name = getattr(policy, "__name__", repr(policy))
        raise ConfigError(f"MoEPPO needs the policy MoEPolicy (MoEActorCriticPolicy), got {name}")


class MoEPPO(PPO):
    """PPO whose actor and critic are mixtures of experts (:class:`MoEActorCriticPolicy`), with moerl's defaults.

    SB3's ``PPO`` arguments keep their meaning; the defaults are :class:`PPOHyperParams`' (PureJaxRL's). Extra:

    :param env: a Gymnasium env, an SB3 VecEnv, or an env id: an id is built as ``n_envs`` environments
        (SB3's ``make_vec_env``), PureJaxRL's 4 by default.
    :param batch_size: minibatch size; None: one rollout (``n_envs * n_steps``) split into ``n_minibatches``.
    :param policy_kwargs: :class:`MoEActorCriticPolicy`'s ``network``, ``obs_layout`` (read from ``env`` when
        absent), ``shared`` (default ``shared_network``), ``optimizer_kwargs``.
    :param shared_network: one network for actor and critic instead of two (a config's ``ppo.shared_network``).
    :param n_envs: environments built when ``env`` is an id (ignored otherwise).
    :param n_minibatches: minibatches per pass over a rollout, when ``batch_size`` is None.
    :param anneal_lr: anneal a constant ``learning_rate`` linearly to 0 over the run (PureJaxRL's ``ANNEAL_LR``), on
        SB3's progress: SB3 updates its progress after collecting a rollout, so the first update already runs at
        ``lr * (1 - 1 / updates)`` where PureJaxRL's runs at ``lr``.
    :param anneal_clip: anneal a constant ``clip_range`` linearly to 0 on the same progress (rl-zoo's
        ``clip_range: lin_0.2``).
    :param adam_eps: Adam's epsilon, unless ``policy_kwargs["optimizer_kwargs"]`` sets it.
    :param value_clip: ``sb3`` or ``max`` (:data:`~moerl.rl.algos.ppo.VALUE_CLIPS`), when ``clip_range_vf`` is set.
    :param aux_loss_coef: weight of the routers' balancing loss, when the network has one.
    :param metrics_interval: env steps between MoE metric computations.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MoEPolicy": MoEActorCriticPolicy}
    policy: MoEActorCriticPolicy

    def __init__(
        self,
        policy: str | type[MoEActorCriticPolicy] = "MoEPolicy",
        env: Any = None,
        learning_rate: float | Schedule = _D.learning_rate,
        n_steps: int = _D.n_steps,
        batch_size: int | None = None,
        n_epochs: int = _D.n_epochs,
        gamma: float = _D.gamma,
        gae_lambda: float = _D.gae_lambda,
        clip_range: float | Schedule = _D.clip_range,
        clip_range_vf: float | Schedule | None = _D.clip_range_vf,
        normalize_advantage: bool = _D.normalize_advantage,
        ent_coef: float = _D.ent_coef,
        vf_coef: float = _D.vf_coef,
        max_grad_norm: float = _D.max_grad_norm,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = _D.target_kl,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        n_envs: int = _D.n_envs,
        n_minibatches: int = _D.n_minibatches,
        anneal_lr: bool = _D.anneal_lr,
        anneal_clip: bool = _D.anneal_clip,
        shared_network: bool = _D.shared_network,
        adam_eps: float = _D.adam_eps,
        value_clip: str = _D.value_clip,
        aux_loss_coef: float = _D.aux_loss_coef,
        metrics_interval: int = 1000,
    ):
        arguments = dict(locals())
        check_policy(policy)
        if _init_setup_model:  # a user's call; ``load`` builds with defaults, then restores what was saved
            check_arguments(arguments)
        self.value_clip, self.aux_loss_coef = value_clip, aux_loss_coef
        self.metrics_interval = metrics_interval
        self._last_metrics_step = -metrics_interval
        #: ``(step, tag, value)`` of every MoE metric since the last :meth:`pop_metrics`.
        self._metric_rows: list[tuple[int, str, float]] = []
        #: Total env steps of the whole run when ``learn`` is called in chunks (checkpoints): the learning-rate
        #: anneal and clip schedules then follow the run, not the chunk (as ``MoEDQN.schedule_timesteps``).
        self.schedule_timesteps: int | None = None
        self._stop_requested = False
        #: Logger values carried by a checkpoint until the new logger exists (:mod:`moerl.rl.sb3.checkpoint`).
        self._pending_log: dict[str, Any] | None = None
        if isinstance(env, str):
            env = make_vec_env(env, n_envs=n_envs)
        envs = env.num_envs if isinstance(env, VecEnv) else (1 if env is not None else n_envs)
        if batch_size is None:
            batch_size = max(2, n_steps * envs // n_minibatches)
        if anneal_lr and not callable(learning_rate):
            learning_rate = LinearSchedule(float(learning_rate), 0.0, 1.0)
        if anneal_clip and not callable(clip_range):
            clip_range = LinearSchedule(float(clip_range), 0.0, 1.0)
        policy_kwargs = dict(policy_kwargs or {})
        policy_kwargs.setdefault("shared", shared_network)
        optimizer_kwargs = dict(policy_kwargs.get("optimizer_kwargs") or {})
        optimizer_kwargs.setdefault("eps", adam_eps)
        policy_kwargs["optimizer_kwargs"] = optimizer_kwargs
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
            gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage, ent_coef=ent_coef, vf_coef=vf_coef,
            max_grad_norm=max_grad_norm, rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs, target_kl=target_kl,
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs,
            verbose=verbose, seed=seed, device=device, _init_setup_model=False,
        )
        if self.env is not None and self.policy_kwargs.get("obs_layout") is None:
            self.policy_kwargs["obs_layout"] = layout_for_env(self.env).to_dict()
        if _init_setup_model:
            self._setup_model()

    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 1, tb_log_name: str = "PPO",
              reset_num_timesteps: bool = True, progress_bar: bool = False, *,
              threads: int | None = TRAINING_THREADS) -> MoEPPO:
        """SB3's ``learn`` on ``threads`` torch threads (one by default, as ``MoEDQN.learn``; None: the caller's)."""
        with torch_threads(threads):
            return super().learn(total_timesteps, callback=callback, log_interval=log_interval,
                                 tb_log_name=tb_log_name, reset_num_timesteps=reset_num_timesteps,
                                 progress_bar=progress_bar)

    # --- chunked training and clean stops -----------------------------------------------------------
    def request_stop(self) -> None:
        """Ask ``learn`` to return before the next rollout, where the state is whole (for checkpoints).

        Called from a signal handler: the rollout being collected and its update finish first, so the state
        saved afterwards is one an uninterrupted run also passes through (a rollout boundary).
        """
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> bool:
        if self._stop_requested:
            return False
        return super().collect_rollouts(*args, **kwargs)

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any):
        total, callback = super()._setup_learn(total_timesteps, *args, **kwargs)
        if self.schedule_timesteps is not None:
            self._total_timesteps = self.schedule_timesteps
        return total, callback

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        """SB3's progress, over the whole run when it is trained in chunks (:attr:`schedule_timesteps`):
        ``OnPolicyAlgorithm.learn`` passes the chunk's end, which would restart the anneal at every chunk."""
        super()._update_current_progress_remaining(num_timesteps, self.schedule_timesteps or total_timesteps)

    # --- learning ----------------------------------------------------------------------------
    def train(self) -> None:
        """SB3's ``PPO.train`` with each minibatch's loss from :func:`ppo_loss` (one member, S = 1).

        The same epochs, minibatches (``rollout_buffer.get``: numpy's global permutation), optimiser step,
        ``clip_grad_norm_`` and ``target_kl`` early stop as SB3; the same ``train/*`` logs, plus
        ``train/aux_loss`` and the MoE metrics.
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = float(self.clip_range(progress))  # type: ignore[operator]  # a schedule once set up
        clip_range_vf = None if self.clip_range_vf is None else float(self.clip_range_vf(progress))  # type: ignore[operator]
        net = self.policy.ac
        use_aux = self.aux_loss_coef > 0 and net.actor.config.uses_moe and net.actor.config.balance_loss != "none"
        want_metrics = self.num_timesteps - self._last_metrics_step >= self.metrics_interval
        logs: dict[str, list[float]] = {}
        approx_kls: list[float] = []
        loss = torch.zeros(1)
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kls = []
            for data in self.rollout_buffer.get(self.batch_size):
                record = net.new_record() if (use_aux or want_metrics) else None
                values, log_prob, entropy = self.policy.evaluate_actions(
                    data.observations, data.actions.long().flatten(), record)
                aux = record.aux_loss() if (record is not None and use_aux) else None
                loss, diag = ppo_loss(
                    log_prob[None], data.old_log_prob[None], data.advantages[None], values.flatten()[None],
                    data.old_values[None], data.returns[None], entropy[None], clip_range=clip_range,
                    ent_coef=self.ent_coef, vf_coef=self.vf_coef, normalize_advantage=self.normalize_advantage,
                    clip_range_vf=clip_range_vf, value_clip=self.value_clip,
                    aux_loss=None if aux is None else aux.reshape(1), aux_loss_coef=self.aux_loss_coef)
                for key, value in diag.items():
                    logs.setdefault(key, []).append(float(value[0]))
                if want_metrics and record is not None:
                    self._log_metrics(record)
                    want_metrics = False
                approx_kls.append(float(diag["approx_kl"][0]))
                if self.target_kl is not None and approx_kls[-1] > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kls[-1]:.2f}")
                    break
                self.policy.optimizer.zero_grad()
                loss.sum().backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break
        self._log_train(logs, approx_kls, float(loss.detach().sum()), clip_range, clip_range_vf)

    def _log_train(self, logs: dict[str, list[float]], approx_kls: list[float], last_loss: float,
                   clip_range: float, clip_range_vf: float | None) -> None:
        """SB3's ``train/*`` keys (same meanings), plus ``train/aux_loss``."""
        buffer = self.rollout_buffer
        names = {"entropy_loss": "train/entropy_loss", "policy_loss": "train/policy_gradient_loss",
                 "value_loss": "train/value_loss", "clip_fraction": "train/clip_fraction",
                 "aux_loss": AUX_LOSS_TAG}
        for key, tag in names.items():
            if logs.get(key):
                self.logger.record(tag, float(np.mean(logs[key])))
        self.logger.record("train/approx_kl", float(np.mean(approx_kls)) if approx_kls else 0.0)
        self.logger.record("train/loss", last_loss)
        self.logger.record("train/explained_variance",
                           explained_variance(buffer.values.flatten(), buffer.returns.flatten()))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _log_metrics(self, record: ActorCriticRecord) -> None:
        self._last_metrics_step = self.num_timesteps
        for key, value in record.metrics().items():
            self.logger.record(moe_tag(key), value)
            self._metric_rows.append((self.num_timesteps, moe_tag(key), float(value)))

    def pop_metrics(self) -> list[tuple[int, str, float]]:
        """The MoE metrics measured since the last call, as ``(env step, tag, value)``, and start anew."""
        rows, self._metric_rows = self._metric_rows, []
        return rows

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_metrics_step", "_metric_rows", "_stop_requested",
                "schedule_timesteps", "_pending_log"]

    # --- analysis ----------------------------------------------------------------------------
    def _obs_batch(self, observations: Any) -> torch.Tensor:
        shape = tuple(self.observation_space.shape or ())
        return torch.as_tensor(np.asarray(observations), device=self.device).reshape(-1, *shape)

    def action_probs(self, observations: np.ndarray) -> np.ndarray:
        """The policy's action probabilities ``(B, n_actions)`` (no gradient; 0 for actions a task lacks)."""
        self.policy.set_training_mode(False)
        with torch.no_grad():
            logits, _ = self.policy.ac(self.policy._obs(self._obs_batch(observations)))
            return torch.softmax(logits, -1).cpu().numpy()

    def moe_metrics(self, observations: np.ndarray) -> dict[str, float]:
        """MoE metrics of both heads on any batch of observations (no gradient)."""
        self.policy.set_training_mode(False)
        with torch.no_grad():
            record = self.policy.ac.forward_record(self.policy._obs(self._obs_batch(observations)))[2]
        return record.metrics()
