"""Config of the ``moe-dqn`` family: plain, typed data, validated before anything is built.

Precedence: dataclass defaults < ``--config`` YAML < CLI flags < ``--set key=value``. Every value is
checked here (unknown keys, wrong types, impossible numbers, unknown env/arch/router/device), so a bad
run never creates a run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from moerl.config import apply_overrides, from_dict, load_yaml, merge
from moerl.errors import ConfigError, check_choice, check_positive, choice_error
from moerl.experiments.families import TrainRequest

FAMILY_NAME = "moe-dqn"
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class NetworkSection:
    """Q-network: placement of the MoE, router and sizes."""

    arch: Literal["dense", "wide", "middle", "final", "all", "big"] = "dense"
    router: Literal["softmoe", "topk", "hardcoded"] = "softmoe"
    experts: int = 4
    topk: int = 1
    #: Hidden width. 128, not dopamine's 512: on a 2-core CPU one update at batch 128 costs
    #: ~6.5-10 ms at width 512 (37 ms for a 4-expert softmoe big), too slow for minutes-long runs.
    hidden: int = 128
    tokens: int = 1
    slots_per_expert: int | None = None
    normalize: bool = False
    noise_std: float = 0.0
    balance_loss: Literal["none", "importance", "load", "entropy"] = "none"
    aux_loss_coef: float = 0.01
    rescale_inputs: bool = True
    #: Feed the task one-hot to the network too (not only to the hardcoded router / action masks).
    task_id_in_features: bool = True


@dataclass
class DQNSection:
    """SB3 DQN hyper-parameters; defaults are dopamine's classic-control DQN (specs/moe-dqn.md)."""

    learning_rate: float = 1e-3
    adam_eps: float = 3.125e-4
    #: Replay capacity. None = dopamine's 50k, except on CRL suites where it is one block
    #: (``block_steps``): a buffer larger than the whole schedule keeps every old task's data and
    #: turns continual RL back into multi-task RL (our 40k-step CartPole CRL fits in 50k entirely).
    buffer_size: int | None = None
    batch_size: int = 128
    learning_starts: int = 500
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 100
    gamma: float = 0.99
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 0.01
    exploration_final_eps: float = 0.01
    loss: Literal["mse", "huber"] = "mse"
    #: Dopamine does not clip; SB3 always calls clip_grad_norm_, so "no clipping" is a huge norm.
    max_grad_norm: float = 1e9


@dataclass
class EvalSection:
    #: Evaluate every task greedily every ``freq`` env steps (0: only at start and end).
    freq: int = 5000
    episodes: int = 5
    final_episodes: int = 10
    #: task name -> run directory of a single-task reference run (for forward transfer).
    reference_runs: dict[str, str] = field(default_factory=dict)


@dataclass
class LoggingSection:
    #: Env steps between MoE metric computations (dormant neurons, router usage).
    metrics_interval: int = 1000
    #: Episodes between SB3 log dumps.
    log_interval: int = 4


@dataclass
class DQNRunConfig:
    family: str = FAMILY_NAME
    env: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    timesteps: int | None = None
    seed: int = 0
    device: str = "auto"
    network: NetworkSection = field(default_factory=NetworkSection)
    dqn: DQNSection = field(default_factory=DQNSection)
    eval: EvalSection = field(default_factory=EvalSection)
    logging: LoggingSection = field(default_factory=LoggingSection)


# --- env names ---------------------------------------------------------------------------------
def resolve_env(name: str) -> str:
    """Gymnasium id for a short name, moerl id or Gymnasium id; ConfigError if unknown."""
    import gymnasium as gym

    from moerl.envs.registration import SHORT_NAMES  # importing moerl.envs registers the moerl/ ids

    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    if name in gym.registry:
        return name
    raise choice_error("env", name, [*SHORT_NAMES, "any Gymnasium id (e.g. CartPole-v1)"])


def matches(name: str) -> bool:
    try:
        resolve_env(name)
    except ConfigError:
        return False
    return True


def list_envs() -> list[tuple[str, str]]:
    from moerl.envs.registration import describe_suites

    return [*describe_suites(), ("<Gymnasium id>", "any registered id with Box observations and Discrete actions")]


# --- config ------------------------------------------------------------------------------------
def build_config(request: TrainRequest) -> DQNRunConfig:
    """Defaults <- --config file <- CLI flags <- --set overrides, validated."""
    data: dict[str, Any] = {}
    if request.config:
        data = load_yaml(request.config)
    from moerl.nn import ARCHS, ROUTERS

    if request.arch is not None:
        check_choice("arch", request.arch, ARCHS)
    if request.router is not None:
        check_choice("router", request.router, ROUTERS)
    flags: dict[str, Any] = {"env": request.env} if request.env else {}
    net: dict[str, Any] = {}
    for key, section_key in (("arch", "arch"), ("router", "router"), ("experts", "experts"), ("topk", "topk")):
        if getattr(request, key) is not None:
            net[section_key] = getattr(request, key)
    if net:
        flags["network"] = net
    for key in ("timesteps", "seed", "device"):
        if getattr(request, key) is not None:
            flags[key] = getattr(request, key)
    data = apply_overrides(merge(data, flags), request.overrides)
    config = from_dict(DQNRunConfig, data)
    return validate(config)


def validate(config: DQNRunConfig) -> DQNRunConfig:
    check_choice("device", config.device, DEVICES)
    if config.family != FAMILY_NAME:
        raise ConfigError(f"config family '{config.family}' is not '{FAMILY_NAME}'")
    config.env = config.env.strip()
    resolve_env(config.env)
    net = config.network
    for what, value in (("experts", net.experts), ("topk", net.topk), ("hidden", net.hidden), ("tokens", net.tokens),
                        ("dqn.batch_size", config.dqn.batch_size),
                        ("dqn.train_freq", config.dqn.train_freq), ("dqn.learning_rate", config.dqn.learning_rate),
                        ("dqn.target_update_interval", config.dqn.target_update_interval),
                        ("eval.episodes", config.eval.episodes), ("eval.final_episodes", config.eval.final_episodes),
                        ("logging.metrics_interval", config.logging.metrics_interval)):
        check_positive(what, value)
    check_positive("eval.freq", config.eval.freq, allow_zero=True)
    if config.timesteps is not None:
        check_positive("timesteps", config.timesteps)
    if config.dqn.buffer_size is not None:
        check_positive("dqn.buffer_size", config.dqn.buffer_size)
    if net.router == "topk" and net.topk > net.experts:
        raise ConfigError(f"--topk {net.topk} is more than the number of experts ({net.experts})")
    if not 0 <= config.dqn.gamma <= 1:
        raise ConfigError(f"dqn.gamma must be in [0, 1], got {config.dqn.gamma}")
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return config


def network_config(net: NetworkSection) -> dict[str, Any]:
    return {
        "arch": net.arch, "hidden": net.hidden, "num_tokens": net.tokens,
        "router": {"kind": net.router, "num_experts": net.experts, "topk": net.topk,
                   "slots_per_expert": net.slots_per_expert, "normalize": net.normalize,
                   "noise_std": net.noise_std, "balance_loss": net.balance_loss},
    }
