"""Config of the ``moe-dqn`` family: plain, typed data, validated before anything is built.

One schema for the CLI, YAML files and the Python API: the ``network:`` section is
:class:`moerl.rl.sb3.policy.MoENetworkConfig` (what ``MoEDQN(policy_kwargs={"network": ...})`` takes),
the ``dqn:`` section is :class:`moerl.rl.algos.dqn.DQNHyperParams` (whose defaults are ``MoEDQN``'s own).
CLI flags are aliases of schema keys (:data:`FLAGS`), also accepted as flat keys in files and ``--set``.

Precedence: schema defaults < ``--config`` YAML < CLI flags < ``--set key=value``. Every value is checked
here (unknown keys, wrong types, impossible numbers, unknown env/arch/router/device, settings that would
not take effect), so a bad run never creates a run directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moerl.core.config import leaf_keys, load_yaml, parse_override, resolve, to_dict, unflatten_aliases
from moerl.core.config_files import resolve_config_file
from moerl.core.devices import DEVICES, check_device, resolve_device
from moerl.core.errors import ConfigError, check_positive
from moerl.core.registry import Registry
from moerl.core.seeding import check_seed
from moerl.nn.choices import ARCHS, ROUTED_ARCHS, ROUTERS
from moerl.rl.algos.dqn import DQNHyperParams
from moerl.rl.nets.encoder import MoENetworkConfig, refuse_ignored_keys
from moerl.rl.nets.obs_layout import no_grid_message
from moerl.runs.kinds import Option, config_options, hashed_run_name

FAMILY_NAME = "moe-dqn"
ENGINES = Registry("engine", {
    "auto": "batched for two or more --seeds of an env the batched engine runs, else sb3 (default)",
    "sb3": "Stable-Baselines3's DQN, one seed at a time (the reference)",
    "batched": "moerl's batched engine: every seed of --seeds in one process, as a batch dimension",
})

COMPILE = Registry("compile", {
    "off": "eager updates, the reference (default: on this project's CPUs the compiled update measured no "
           "faster for dense and slower for the MoE archs, docs/batched-engine.md 'Compiled updates')",
    "on": "the batched engine's updates through torch.compile (seconds to compile, once per process)",
})

#: CLI flag (TrainRequest field) -> config key. A flag not listed here is refused for this family.
FLAGS: Mapping[str, str] = {
    "env": "env",
    "arch": "network.arch",
    "router": "network.router",
    "experts": "network.experts",
    "topk": "network.topk",
    "timesteps": "timesteps",
    "seed": "seed",
    "device": "device",
    "engine": "engine",
    "compile": "compile",
}

#: The RL line's algorithms (``--algo``): each has its own config schema and engines; DQN is the default.
RL_ALGOS = Registry("RL algorithm", {
    "dqn": "MoE DQN: the SB3 reference engine and the batched engine (the dqn: section)",
    "ppo": "MoE PPO: the SB3 reference engine and the batched engine (the ppo: section; docs/moe-ppo.md)",
})


def check_algo(algo: str | None) -> str:
    """The RL algorithm ``--algo`` names (default ``dqn``), or the one-line refusal with the valid choices."""
    return RL_ALGOS.check("dqn" if algo is None else algo)


def algo_of(raw: Mapping[str, Any]) -> str:
    """The algorithm a config mapping (a run's ``config.yaml``, a ``--config`` file) is for: its ``algo`` key,
    absent in DQN's configs (they were written before ``--algo`` existed and stay as they are)."""
    algo = raw.get("algo", "dqn")
    if not isinstance(algo, str):
        raise ConfigError(f"config key 'algo' must name an RL algorithm ({RL_ALGOS.help()}), got {algo!r}")
    return RL_ALGOS.check(algo)


def refuse_other_algos(algo: str, keys: Iterable[str], where: str) -> None:
    """Refuse a setting of another algorithm's section (``--set dqn.batch_size=...`` in a PPO run) with one
    line naming both algorithms, rather than an "unknown key" that hides why. ``keys``: dotted or top-level
    config keys given in ``where`` (``--set``, the config file)."""
    for key in keys:
        section = str(key).split(".")[0]
        if section in RL_ALGOS and section != algo:
            raise ConfigError(f"{where} sets '{key}', a setting of --algo {section}, but this run trains --algo "
                              f"{algo} (its settings are under '{algo}.')")


@dataclass
class EvalSection:
    #: Evaluate every task greedily every ``freq`` env steps (0: only at start and end). 1,000 gives the
    #: suites' default budgets 41-121 points per curve; all tasks are evaluated in one batch, so this costs
    #: about 8% of the training time on the SB3 path (docs/moe-dqn.md, "Evaluation cost").
    freq: int = 1000
    episodes: int = 5
    final_episodes: int = 10
    #: task name -> run directory of a single-task reference run (for forward transfer).
    reference_runs: dict[str, str] = field(default_factory=dict)


#: Most evaluation episodes per task: ``eval.episodes``, ``eval.final_episodes``, ``moerl eval --episodes``.
MAX_EVAL_EPISODES = 1000


def check_eval_episodes(what: str, value: int) -> int:
    """``value`` evaluation episodes per task, refused (one line) above :data:`MAX_EVAL_EPISODES`.

    Why 1,000: every episode of every task is stepped at once, each in an environment of its own
    (:func:`moerl.rl.evaluation.run_task_episodes`), so the count is memory that nothing else bounds (1e8
    ran for minutes, then ran out of memory or segfaulted); and task ``k``'s episode ``i`` is reset with
    seed ``seed + 1000 * k + i``, so past 1,000 one task's episodes would repeat the next task's seeds.
    1,000 episodes put the standard error of a mean return at 3% of the returns' spread: 100 times the
    default ``final_episodes``, more than any comparison here needs.
    """
    check_positive(what, value)
    if value > MAX_EVAL_EPISODES:
        raise ConfigError(f"{what} must be at most {MAX_EVAL_EPISODES} episodes per task, got {value}")
    return value


@dataclass
class LoggingSection:
    #: Env steps between MoE metric computations (dormant neurons, router usage).
    metrics_interval: int = 1000
    #: Episodes between SB3 log dumps.
    log_interval: int = 4


@dataclass
class CheckpointSection:
    #: Env steps between checkpoints (model, optimiser, replay, env, random states), rounded down to a
    #: multiple of ``dqn.train_freq``; 0: none (a killed run then starts over). At ~600-1,500 steps/s, 10k
    #: steps lose at most 10-20 s of training.
    every: int = 10_000


@dataclass
class _RunHead:
    """The sections every RL run config starts with (see :class:`RLRunConfig`)."""

    family: str = FAMILY_NAME
    env: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    #: None = the suite's scheduled budget (CRL), 50k (CartPole) or 100k (other ids).
    timesteps: int | None = None
    seed: int = 0
    #: ``auto``: the faster device for the engine (:func:`engine_device`): the CPU for ``sb3``, else a GPU if any.
    device: str = "auto"
    network: MoENetworkConfig = field(default_factory=MoENetworkConfig)


@dataclass
class _RunTail:
    """The sections every RL run config ends with (see :class:`RLRunConfig`)."""

    eval: EvalSection = field(default_factory=EvalSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    #: Which engine trains the run (:data:`ENGINES`); ``batched`` trains ``--seeds`` together; ``auto`` is
    #: resolved before the run starts (:func:`resolve_engine`), so a run's config.yaml names the engine it used.
    engine: str = "auto"
    #: Whether the batched engine compiles its updates (:data:`COMPILE`). How, not what: not part of the
    #: config id (compiled and eager updates differ in float rounding only).
    compile: str = "off"


@dataclass
class RLRunConfig(_RunTail, _RunHead):
    """What every RL algorithm's run config holds: the env, the network, evaluation, logging, checkpoints.

    An algorithm's config is this plus its own section (``dqn:``, ``ppo:``), declared as
    ``class XRunConfig(RLRunConfig, _RunTail, _XSection, _RunHead)``. Why that spelling: a dataclass lists
    its fields in reverse method-resolution order, which here is head, algorithm section, tail, so the
    section sits between ``network`` and ``eval`` where DQN's always was. A run's ``config.yaml`` is written
    in field order, so DQN's files (and, since ids hash the config, DQN's run ids) stay byte for byte what
    they were before PPO (tests/test_ppo_cli.py pins both); every common part is written once, here.
    """


@dataclass
class _DQNSection:
    dqn: DQNHyperParams = field(default_factory=DQNHyperParams)


@dataclass
class DQNRunConfig(RLRunConfig, _RunTail, _DQNSection, _RunHead):
    """MoE DQN's run config: :class:`RLRunConfig` plus the ``dqn:`` section (no ``algo`` key: DQN is the
    default algorithm, and configs written before ``--algo`` existed name none)."""


# --- env names ---------------------------------------------------------------------------------
def resolve_env(name: str) -> str:
    """Gymnasium id for a short name, moerl id or Gymnasium id; ConfigError if unknown."""
    from moerl.rl.envs.registration import resolve_env_id

    return resolve_env_id(name)


def matches(name: str) -> bool:
    try:
        resolve_env(name)
    except ConfigError:
        return False
    return True


def list_envs() -> list[tuple[str, str]]:
    from moerl.rl.envs.registration import describe_suites

    return [*describe_suites(), ("<Gymnasium id>", "any registered id with Box observations and Discrete actions")]


# --- config ------------------------------------------------------------------------------------
def build_config(file: str | None = None, flags: Mapping[str, Any] | None = None,
                 overrides: tuple[str, ...] | list[str] = ()) -> DQNRunConfig:
    """Defaults <- ``file`` <- ``flags`` (TrainRequest field -> value) <- ``overrides``, validated."""
    keyed = {FLAGS[name]: value for name, value in (flags or {}).items() if value is not None and name != "algo"}
    refuse_given_sections("dqn", file, overrides)
    config, given = resolve(DQNRunConfig, file=file, flags=keyed, overrides=overrides, aliases=FLAGS)
    if file:
        given = given - default_valued_file_keys(file, config, set(keyed), overrides)
    return validate(config, given)


def refuse_given_sections(algo: str, file: str | None, overrides: tuple[str, ...] | list[str]) -> None:
    """:func:`refuse_other_algos` over what a run was given: ``--set`` keys, then the config file's sections."""
    refuse_other_algos(algo, [".".join(parse_override(text)[0]) for text in overrides], "--set")
    if file:
        refuse_other_algos(algo, load_yaml(file), f"config file '{file}'")


def default_valued_file_keys(file: str, config: RLRunConfig, flag_keys: set[str],
                              overrides: tuple[str, ...] | list[str]) -> set[str]:
    """Keys only a config file gives, at their default value: not a request for a setting, so never refused.

    A run's own ``config.yaml`` lists every key (``router: softmoe`` for a dense run too); re-running it with
    ``--config`` must work, while a non-default value a network would ignore is still refused.
    """

    file_keys = leaf_keys(unflatten_aliases(load_yaml(file), FLAGS))
    override_keys = {".".join(parse_override(text)[0]) for text in overrides}
    override_keys |= {FLAGS.get(k, k) for k in override_keys}
    ours, defaults = to_dict(config), to_dict(type(config)())
    out = set()
    for key in file_keys - flag_keys - override_keys:
        mine, default = ours, defaults
        for part in key.split("."):
            mine = mine.get(part) if isinstance(mine, dict) else None
            default = default.get(part) if isinstance(default, dict) else None
        if mine == default:
            out.add(key)
    return out


def _flag_of(key: str) -> str:
    names = [f"--{name}" for name, path in FLAGS.items() if path == key]
    return f"'{key}'" + (f" ({names[0]})" if names else "")


def validate(config: DQNRunConfig, given: frozenset[str] = frozenset()) -> DQNRunConfig:
    """Check every value; ``given`` (keys the user set) lets settings that would be ignored be refused."""
    check_device(config.device)
    ENGINES.check(config.engine)
    COMPILE.check(config.compile)
    if config.compile == "on" and config.engine == "sb3":
        raise ConfigError("compile: on applies to the batched engine; the sb3 engine runs eager "
                          "(use --engine batched, or compile: off)")
    if config.compile == "on" and config.network.expert_compute == "routed":
        raise ConfigError("compile: on does not run network.expert_compute 'routed' (grouped_mm is not "
                          "compiled); use one or the other")
    if config.compile == "on" and config.network.expert_compute == "auto":  # auto: routed only where not compiled
        config.network.expert_compute = "dense"
    return validate_run(config, given, config.dqn.validate, lambda: check_sizes(config))


def validate_run(config: RLRunConfig, given: frozenset[str], check_section: Callable[[], Any],
                 check_memory: Callable[[], Any]) -> Any:
    """The checks every RL algorithm's config shares, in one order; ``check_section`` checks the algorithm's
    own section (where a bad value in it is reported among the others), ``check_memory`` what one run of it
    would hold. Returns ``config``."""
    if config.family != FAMILY_NAME:
        raise ConfigError(f"config family '{config.family}' is not '{FAMILY_NAME}'")
    config.env = config.env.strip()
    from moerl.rl.envs.registration import check_env_kwargs, has_grid

    check_env_kwargs(resolve_env(config.env), config.env_kwargs)
    net = config.network
    if net.torso == "conv" and not has_grid(resolve_env(config.env)):
        raise ConfigError(no_grid_message(config.env))
    check_section()
    for what, value in (("network.experts", net.experts), ("network.topk", net.topk),
                        ("network.hidden", net.hidden), ("network.tokens", net.tokens),
                        ("eval.episodes", config.eval.episodes), ("eval.final_episodes", config.eval.final_episodes),
                        ("logging.metrics_interval", config.logging.metrics_interval),
                        ("logging.log_interval", config.logging.log_interval)):
        check_positive(what, value)
    check_eval_episodes("eval.episodes", config.eval.episodes)
    check_eval_episodes("eval.final_episodes", config.eval.final_episodes)
    check_positive("eval.freq", config.eval.freq, allow_zero=True)
    check_positive("checkpoint.every", config.checkpoint.every, allow_zero=True)
    check_positive("network.noise_std", net.noise_std, allow_zero=True)
    check_seed(config.seed)
    check_memory()
    _check_reference_runs(config.eval.reference_runs)
    for task, path in config.eval.reference_runs.items():
        if not (Path(path) / "eval.csv").is_file():
            raise ConfigError(f"eval.reference_runs.{task}: '{path}' is not a run directory with an eval.csv")
    if config.timesteps is not None:
        check_positive("timesteps", config.timesteps)
    net.validate()
    refuse_ignored_keys(net, given, _flag_of)
    if config.device.startswith("cuda"):

        resolve_device(config.device)
    return config


def _check_reference_runs(reference_runs: Any) -> None:
    """``eval.reference_runs`` maps task names to run directories (strings); anything else is one line."""
    if not isinstance(reference_runs, Mapping):
        raise ConfigError(f"eval.reference_runs must map task names to run directories, got {reference_runs!r}")
    for task, path in reference_runs.items():
        if not isinstance(path, str):
            raise ConfigError(f"eval.reference_runs.{task} must be a run directory (a path), got {path!r}")


#: Fraction of the machine's memory one run may plan to use (replay buffer + networks) before it is refused.
MEMORY_FRACTION = 0.5


def _machine_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume 16 GiB
        return 16 << 30


#: Conv output positions of the largest grid a suite has (MinAtar's 10 x 10, a valid 3 x 3 conv: 8 x 8): the
#: tokens of the position-token MoE layers, for :func:`memory_needs`.
CONV_POSITIONS = 64


def memory_needs(config: DQNRunConfig, obs_dim: int = 64, seeds: int = 1,
                 capacity: int | None = None, obs_bytes: int = 4) -> dict[str, tuple[str, int]]:
    """Bytes ``seeds`` runs of ``config`` hold at once, per part: (the key that sizes it, bytes).

    A deliberately rough upper estimate, meant to refuse sizes no machine of ours can hold before they reach
    the allocator (which answers with a traceback, a hang or the OOM killer), never to refuse a real config:
    the replay buffer's observations and next observations in ``obs_bytes`` per entry (float32's 4; the
    MinAtar suites' bytes are stored as such, 1); the online and target networks' weights
    and Adam's two moments; one update's inputs and activations (forward and backward of the online network,
    forward of the target): the router's weights of every token for every slot, and the hidden activations of
    every slot and token. ``obs_dim`` is an upper bound on our suites' observation size unless the caller knows
    the real one. With the conv torso, ``middle`` and ``all`` route one token per conv position (MinAtar's
    10 x 10 grids: :data:`CONV_POSITIONS`), not ``network.tokens``.
    """
    net, d = config.network, config.dqn
    capacity = capacity if capacity is not None else d.buffer_size
    width = net.hidden * (net.experts if net.arch == "wide" else 1)
    routed = net.arch in ROUTED_ARCHS
    experts = net.experts if routed else 1
    tokens = CONV_POSITIONS if net.torso == "conv" and net.arch in ("middle", "all") else net.tokens
    slots = 1
    if routed and net.router == "softmoe":
        slots = experts * (net.slots_per_expert or -(-tokens // experts))
    params = experts * (obs_dim * width + width * width + width * 8) + width * width + width * slots
    per_sample = 2 * obs_dim * 4 + 16  # an update's minibatch, made float for the network
    # per sample and pass, in floats: the router's token x slot (or expert) weights, and the hidden activations
    # of the slots (softmoe) or routed tokens and of the tokens themselves, twice (a layer's input and output)
    activations = tokens * max(slots, experts) + 2 * (max(slots, tokens) + tokens) * width
    update = d.batch_size * per_sample + 4 * 3 * d.batch_size * activations
    return {
        "replay": ("dqn.buffer_size", seeds * (capacity or 0) * (2 * obs_dim * obs_bytes + 16)),
        "network": ("network.hidden / network.experts", seeds * 4 * 4 * params),
        "update": ("dqn.batch_size" if slots == 1 else "dqn.batch_size / network.slots_per_expert",
                   seeds * update),
    }


def check_sizes(config: DQNRunConfig, obs_dim: int = 64, seeds: int = 1, capacity: int | None = None,
                obs_bytes: int = 4) -> None:
    """Refuse a run (or a batch of ``seeds`` runs) whose :func:`memory_needs` exceed the share of this
    machine's memory one run may plan to use, naming the part that needs most and its key."""
    needs = memory_needs(config, obs_dim, seeds, capacity, obs_bytes)
    total = sum(size for _, size in needs.values())
    limit = int(_machine_bytes() * MEMORY_FRACTION)
    if total <= limit:
        return
    part, (key, size) = max(needs.items(), key=lambda item: item[1][1])
    who = f"{seeds:,} seeds of this config need" if seeds > 1 else "this config needs"
    raise ConfigError(
        f"{who} about {total / 2**30:,.1f} GiB ({part}: {size / 2**30:,.1f} GiB, sized by "
        f"{key}); this machine allows {limit / 2**30:.1f} GiB per run{'; run fewer seeds at once' if seeds > 1 else ''}"
    )


#: Keys added to the schema after runs were written, with the value those runs computed with (not the new
#: default): a resumed or re-evaluated old run goes on computing as it did.
KEYS_OLDER_RUNS_LACK: dict[str, Any] = {"network.expert_compute": "dense"}


def stored_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A run directory's ``config.yaml`` as written, with :data:`KEYS_OLDER_RUNS_LACK` filled in where absent."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted, value in KEYS_OLDER_RUNS_LACK.items():
        section, _, key = dotted.partition(".")
        inner = out.setdefault(section, {})
        if isinstance(inner, dict):
            inner.setdefault(key, value)
    return out


def engine_device(config: RLRunConfig, device: str | None = None):
    """The torch device the run's engine uses: ``auto`` means the faster one for that engine.

    Measured (issue 10, an H100 machine): one SB3-path run of these small networks is launch-bound on a GPU
    (the headline run took 131 s with ``--device cuda``, 116 s on one CPU core), so ``auto`` is the CPU for
    the ``sb3`` engine; the batched engine gains from a GPU, so there ``auto`` is the GPU when torch sees one.
    """

    name = device or config.device
    if name == "auto" and config.engine in ("sb3", "auto"):
        name = "cpu"
    return resolve_device(name)


def apply_resume_flags(config: Any, timesteps: int | None, device: str | None, step: int,
                       check: Callable[[Any], Any] | None = None) -> Any:
    """What ``--resume`` may change (a new total, the device), checked against the checkpoint's step, then the
    whole config by ``check`` (the algorithm's validation; DQN's :func:`validate` by default)."""
    if timesteps is not None:
        if timesteps < step:
            raise ConfigError(f"--timesteps {timesteps} is below the checkpoint's step {step}")
        config.timesteps = timesteps
    if device is not None:
        config.device = device
    return (check or validate)(config)


def default_timesteps(config: RLRunConfig) -> int:
    """The run's budget when ``timesteps`` is not set: the suite's schedule, else 50k (CartPole) or 100k."""
    from moerl.rl.envs.registration import default_timesteps as suite_default

    steps = suite_default(resolve_env(config.env), **config.env_kwargs)
    if steps is not None:
        return steps
    return 50_000 if config.env.startswith("CartPole") else 100_000


def reference_rows(reference_runs: dict[str, str]) -> dict[str, list[dict]]:
    """Per task, the eval.csv rows of its single-task reference run (for forward transfer)."""
    import csv

    out = {}
    for task, path in reference_runs.items():
        f = Path(path) / "eval.csv"
        if not f.is_file():
            raise ConfigError(f"reference run for task '{task}' has no eval.csv: '{path}'")
        with f.open() as fh:
            out[task] = list(csv.DictReader(fh))
    return out


def run_label(config: Mapping[str, Any]) -> str:
    """``<env>[_ppo]_<arch>[_<router>]-<config id>`` for a resolved config (as :func:`moerl.core.config.to_dict` gives it).

    One name for ``moerl train`` (both engines) and ``moerl sweep``: the same config gets the same
    directory wherever it is trained. Archs without a router (dense, wide) never carry one in the name,
    whatever ``network.router`` holds; a conv torso adds ``_conv``. The id is the config's hash before the run resolves its budget and
    replay capacity (a sweep names its jobs before that), so it is computed on the validated config.
    """

    net = config["network"]
    router = net["router"] if net["arch"] in ROUTED_ARCHS else None
    torso = net.get("torso", "mlp")  # named only when not the default, so MLP runs keep their names
    algo = config.get("algo")  # PPO's configs name their algorithm; DQN's (the default) never did
    return hashed_run_name(config, (str(config["env"]).replace("/", "-"), algo, net["arch"], router,
                                    None if torso == "mlp" else torso), None)


def sweep_config(base_file: str | None, keys: Mapping[str, Any]) -> dict[str, Any]:
    """One ``moerl sweep`` point: defaults < base config file < ``keys`` (dotted config keys or the CLI's
    flat names), validated as ``moerl train`` validates a config; the resolved config as a dict."""

    file = str(resolve_config_file(base_file)) if base_file else None
    flags = {FLAGS.get(k, k): v for k, v in keys.items()}
    config, given = resolve(DQNRunConfig, file=file, flags=flags, aliases=FLAGS)
    if file:
        given = given - default_valued_file_keys(file, config, set(flags), ())
    return to_dict(validate(config, given))


#: The RL line's ``moerl train`` flags: those that set config keys (typed and defaulted by
#: :class:`DQNRunConfig`), ``--seeds`` and ``--algo`` (which picks the config schema itself).
OPTIONS = config_options(DQNRunConfig, {k: v for k, v in FLAGS.items() if k != "env"}, {
    "arch": f"network architecture ({ARCHS.help()})",
    "router": f"MoE router ({ROUTERS.help()}); archs with a router only",
    "experts": "number of experts",
    "topk": "experts per sample (router topk only)",
    "timesteps": "environment steps (none: the suite's own budget)",
    "seed": "random seed",
    "device": f"{', '.join(DEVICES)} (auto: the batched engine on a GPU when there is one; a single run on "
              "the sb3 engine stays on the CPU, where its small networks are faster)",
    "engine": "auto (batched for two or more --seeds of a suite, else sb3), batched (every seed in one "
              "process) or sb3 (one seed at a time)",
    "compile": f"the batched engine's updates through torch.compile ({COMPILE.help()})",
}, extra=(
    Option("seeds", "several seeds of one config, e.g. 0-9 or 0,3,7: one run directory per seed"),
    Option("algo", f"the RL algorithm ({RL_ALGOS.help()}; default: dqn)"),
))

