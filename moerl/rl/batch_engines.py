"""What a batch of runs (:mod:`moerl.rl.batched_runs`) needs to know of its algorithm's batched engine.

Why an adapter: the batch loop (evaluations, checkpoints, signals, resume, one run directory per member, the
sweep's groups and their calibration) is the same for every algorithm; what differs is small and named here
once per algorithm: which config schema a member is, which settings members may hold each their own, how a
member's budget is resolved, the engine built for the members, the env steps between checkpoints, the
training scalars a member's TensorBoard gets, and the SB3 zip a member's network is exported to. DQN's adapter
is exactly what :mod:`moerl.rl.batched_runs` did before it was generalised (its outputs are pinned by tests);
PPO's drives :class:`~moerl.rl.engine.batched_ppo.BatchedPPO`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from moerl.core.config import to_dict
from moerl.core.errors import ConfigError
from moerl.rl.config import DQNRunConfig, algo_of, check_sizes, default_timesteps, resolve_env, validate
from moerl.rl.ppo_config import PPORunConfig, check_rollout_size, validate_ppo
from moerl.rl.record import AUX_LOSS_TAG, LOSS_TAG, export_model

#: Gymnasium ids the batched engines reproduce, as one-task suites without a task one-hot.
PLAIN_IDS = {"CartPole-v1": "cartpole-default", "MountainCar-v0": "mountaincar-default"}


def task_names(env_id: str, spec: Any) -> list[str]:
    """The task names a run on ``env_id`` records (eval rows, results, TensorBoard tags, progress): the suite's,
    or for a plain Gymnasium id its own id, as the SB3 path names that env's one task (not the suite task the
    batched engine reproduces it with), so that runs of both engines share their task columns."""
    return [env_id] if env_id in PLAIN_IDS else list(spec.task_names)


def suite_spec(env_id: str, env_kwargs: dict[str, Any], fixed_task: str | None = None):
    """The suite the batched engines reproduce for ``env_id``: a :class:`~moerl.rl.envs.suite.TaskSuiteEnv`, or
    a :class:`~moerl.rl.envs.minatar_suite.MinAtarSuiteEnv` for the MinAtar suites (which needs the optional
    ``minatar`` package, as on the SB3 path: the spec is the reference suite)."""
    from moerl.rl.envs.registration import make
    from moerl.rl.envs.suite import SuiteEnv, TaskSuiteEnv

    if env_id in PLAIN_IDS:
        if env_kwargs:
            raise ConfigError(f"env_kwargs do not apply to '{env_id}' with the batched engine")
        return TaskSuiteEnv([PLAIN_IDS[env_id]], "mtrl", task_onehot=False)
    if not env_id.startswith("moerl/") or "RoutingMDP" in env_id:
        raise ConfigError(f"the batched engine runs moerl's task suites, CartPole-v1 and MountainCar-v0, "
                          f"not '{env_id}'; use --engine sb3")
    if "render_mode" in env_kwargs:
        raise ConfigError("the batched engine does not render: remove env_kwargs.render_mode")
    kwargs = dict(env_kwargs)
    if fixed_task is not None:
        kwargs["fixed_task"] = fixed_task
    env = make(env_id, **kwargs).unwrapped
    assert isinstance(env, SuiteEnv)
    return env


#: Config keys members of one batch may hold each their own, whatever the algorithm.
COMMON_MEMBER_KEYS = ("env", "env_kwargs", "eval.reference_runs")

#: PPO's ``train/*`` diagnostics of :class:`~moerl.rl.engine.batched_ppo.PPOTrainLog` under the SB3 path's tags
#: (:meth:`MoEPPO._log_train <moerl.rl.sb3.moe_ppo.MoEPPO._log_train>`).
PPO_TAGS = {"policy_loss": "train/policy_gradient_loss", "value_loss": "train/value_loss",
            "entropy_loss": "train/entropy_loss", "clip_fraction": "train/clip_fraction",
            "approx_kl": "train/approx_kl", "explained_variance": "train/explained_variance",
            "learning_rate": "train/learning_rate", "clip_range": "train/clip_range", "aux_loss": AUX_LOSS_TAG}


class DQNBatchEngine:
    """MoE DQN on :class:`~moerl.rl.engine.batched_dqn.BatchedDQN` (members may have budgets of their own)."""

    algo = "dqn"
    schema: type = DQNRunConfig

    @staticmethod
    def member_keys() -> tuple[str, ...]:
        from moerl.rl.engine.batched_dqn import PER_MEMBER

        return (*COMMON_MEMBER_KEYS, "timesteps", *(f"dqn.{k}" for k in PER_MEMBER))

    @staticmethod
    def validate(config: Any) -> Any:
        return validate(config)

    @staticmethod
    def resolve(config: Any, spec: Any) -> int:
        """Fill the budget and the replay capacity in; returns the capacity (sizes are checked on it)."""
        from moerl.rl.sb3.moe_dqn import default_buffer_size

        if config.timesteps is None:
            config.timesteps = default_timesteps(config)
        config.dqn = dataclasses.replace(config.dqn, buffer_size=config.dqn.buffer_size or default_buffer_size(spec))
        return int(config.dqn.buffer_size)

    @staticmethod
    def check_sizes(config: Any, spec: Any, seeds: int, capacity: int) -> None:
        check_sizes(config, int(spec.observation_space.shape[0]), seeds, capacity,
                    obs_bytes=np.dtype(spec.observation_space.dtype).itemsize)  # MinAtar's replay holds bytes

    @staticmethod
    def build(configs: list[Any], specs: list[Any], seeds: list[int], device: Any, compiled: bool) -> Any:
        from moerl.rl.engine.batched_dqn import BatchedDQN

        return BatchedDQN(specs, seeds, configs[0].network, [c.dqn for c in configs], device,
                          metrics_interval=configs[0].logging.metrics_interval, compile=compiled)

    @staticmethod
    def checkpoint_steps(config: Any) -> int:
        """Env steps between batch checkpoints (0: none), a multiple of ``train_freq`` as on the SB3 path."""
        every, freq = config.checkpoint.every, config.dqn.train_freq
        return max(freq, (every // freq) * freq) if every else 0

    @staticmethod
    def train_scalars(log: Any, i: int, step: int, config: Any) -> list[tuple[str, float, int]]:
        """Member ``i``'s training scalars of ``log``: the mean TD and balancing losses, at the evaluation."""
        out = []
        if log.td_loss:
            out.append((LOSS_TAG, float(np.mean([t[i] for t in log.td_loss])), step))
        if log.aux_loss:
            out.append((AUX_LOSS_TAG, float(np.mean([a[i] for a in log.aux_loss])), step))
        return out

    @staticmethod
    def export(run: Any, i: int, agent: Any, config: Any, spec: Any, seed: int) -> int:
        """Member ``i``'s network as an SB3 ``MoEDQN`` zip (``MoEDQN.load`` reads it); its parameter count."""
        from moerl.rl.nets.qnetwork import count_parameters
        from moerl.rl.sb3.moe_dqn import MoEDQN

        model = MoEDQN("MoEPolicy", spec, policy_kwargs={"network": to_dict(config.network)}, seed=seed,
                       device="cpu", **dataclasses.asdict(config.dqn))
        model.policy.q_net.q_net.load_state_dict(agent.q_net.state_dict_of(i))
        model.policy.q_net_target.q_net.load_state_dict(agent.q_net_target.state_dict_of(i))
        model.num_timesteps = agent.num_timesteps
        export_model(run, model)
        return count_parameters(model.policy.q_net.q_net)


class PPOBatchEngine:
    """MoE PPO on :class:`~moerl.rl.engine.batched_ppo.BatchedPPO`.

    Members share their budget (``timesteps`` is not a member key): BatchedPPO cannot yet let a member leave
    a batch, so a sweep groups PPO runs of one budget (:func:`moerl.rl.sweep_groups.group_key`). A budget is
    whole rollouts, as on the SB3 path (:func:`moerl.rl.ppo_run.whole_rollouts`). On a CRL suite each of the
    ``ppo.n_envs`` environments runs ``block_steps / n_envs`` steps of each block (:meth:`training_specs`), so
    the run switches task on the suite's own grid of total env steps, as the SB3 path's PPO and DQN do.
    """

    algo = "ppo"
    schema: type = PPORunConfig

    @staticmethod
    def member_keys() -> tuple[str, ...]:
        from moerl.rl.engine.batched_ppo import PER_MEMBER

        return (*COMMON_MEMBER_KEYS, *(f"ppo.{k}" for k in PER_MEMBER))

    @staticmethod
    def validate(config: Any) -> Any:
        return validate_ppo(config)

    @staticmethod
    def resolve(config: Any, spec: Any) -> int:
        from moerl.rl.ppo_run import run_suite_info, whole_rollouts

        run_suite_info(config)  # refuses what PPO cannot run (a random order over several envs, blocks)
        if config.timesteps is None:
            config.timesteps = default_timesteps(config)
        whole_rollouts(config)
        return 0

    @staticmethod
    def check_sizes(config: Any, spec: Any, seeds: int, capacity: int) -> None:
        check_rollout_size(dataclasses.replace(config, ppo=dataclasses.replace(
            config.ppo, n_envs=config.ppo.n_envs * seeds)), int(spec.observation_space.shape[0]))

    @staticmethod
    def training_specs(configs: list[Any], specs: list[Any]) -> list[Any]:
        """The suites the engine trains: a CRL suite with blocks of ``block_steps / n_envs`` env steps."""
        out = []
        for config, spec in zip(configs, specs, strict=True):
            n = config.ppo.n_envs
            if spec.schedule() and n > 1:  # as the SB3 path's environments (moerl.rl.ppo_run.make_vec_env)
                spec = suite_spec(resolve_env(config.env), {**config.env_kwargs, "block_steps": spec.block_steps // n})
            out.append(spec)
        return out

    @classmethod
    def build(cls, configs: list[Any], specs: list[Any], seeds: list[int], device: Any, compiled: bool) -> Any:
        from moerl.rl.engine.batched_ppo import BatchedPPO

        return BatchedPPO(cls.training_specs(configs, specs), seeds, configs[0].network, [c.ppo for c in configs],
                          device=device, metrics_interval=configs[0].logging.metrics_interval)

    @staticmethod
    def checkpoint_steps(config: Any) -> int:
        """Env steps between batch checkpoints (0: none), in whole rollouts (a checkpoint is a rollout boundary)."""
        every, rollout = config.checkpoint.every, config.ppo.n_envs * config.ppo.n_steps
        return max(rollout, (every // rollout) * rollout) if every else 0

    @staticmethod
    def train_scalars(log: Any, i: int, step: int, config: Any) -> list[tuple[str, float, int]]:
        """Member ``i``'s PPO diagnostics, one point per update at the env step it ended, under SB3's ``train/*``
        tags; ``train/loss`` is the update's mean loss over its minibatches (SB3 logs its last minibatch's)."""
        p = config.ppo
        out: list[tuple[str, float, int]] = []
        for at, update in log.updates:
            values = {key: float(v[i]) for key, v in update.items()}
            out.extend((PPO_TAGS[key], value, at) for key, value in values.items() if key in PPO_TAGS)
            loss = values["policy_loss"] + p.ent_coef * values["entropy_loss"] + p.vf_coef * values["value_loss"]
            out.append(("train/loss", loss + p.aux_loss_coef * values.get("aux_loss", 0.0), at))
        return out

    @staticmethod
    def export(run: Any, i: int, agent: Any, config: Any, spec: Any, seed: int) -> int:
        """Member ``i``'s actor and critic as an SB3 ``MoEPPO`` zip (``MoEPPO.load`` reads it), built as the SB3
        path builds the run's model (its ``n_envs`` environments, every ``ppo:`` setting); its parameter count."""
        from moerl.rl.nets.qnetwork import count_parameters
        from moerl.rl.ppo_run import build_ppo_model, make_vec_env, run_suite_info

        one = dataclasses.replace(config, seed=seed)
        env = make_vec_env(one, run_suite_info(one))
        try:
            model = build_ppo_model(one, env, device="cpu")
            model.policy.ac.actor.load_state_dict(agent.actor.state_dict_of(i))
            if agent.critic is not None:
                assert model.policy.ac.critic is not None
                model.policy.ac.critic.load_state_dict(agent.critic.state_dict_of(i))
            model.num_timesteps = agent.num_timesteps
            export_model(run, model)
            return count_parameters(model.policy.ac)
        finally:
            env.close()


BatchEngine = DQNBatchEngine | PPOBatchEngine
_ENGINES: dict[str, Any] = {"dqn": DQNBatchEngine, "ppo": PPOBatchEngine}


def engine_of(config: Any) -> Any:
    """The adapter of a member config: a config object, or a mapping as written (``algo`` absent: DQN)."""
    if isinstance(config, Mapping):
        return _ENGINES[algo_of(config)]
    return _ENGINES[getattr(config, "algo", "dqn")]


__all__ = ["PLAIN_IDS", "PPO_TAGS", "DQNBatchEngine", "PPOBatchEngine", "engine_of", "suite_spec", "task_names"]
