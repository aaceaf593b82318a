"""Names and hyper-parameters of the routing line, defined once and importable without torch.

Why a module of its own: the CLI builds its help and validates configs at start-up without importing
torch, while the learner (:mod:`moerl.routing.trainer`) and the family
(:mod:`moerl.routing.experiment`) both need the same names and the same schema. Everything here is
read by both; nothing is repeated elsewhere.

* :data:`ROUTING_POLICIES`, :data:`BASELINES`, :data:`ALGOS`: the ``--algo`` choices (routers in
  :mod:`moerl.routing.policies`, baselines in :mod:`moerl.routing.baselines`; both check at import that
  their implementations match these names).
* :data:`WPL_FORMS`, :data:`COLLAB_REWARDS`, :data:`ROUTING_MODES`: the other named choices.
* :class:`LearnerConfig`: the hyper-parameters of one learner; the family's run config
  (:class:`moerl.routing.experiment.RoutingConfig`) extends it with run-only keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from moerl.core.errors import ConfigError, check_positive
from moerl.core.registry import Registry

ROUTING_POLICIES = Registry("routing algo", {
    "wpl": "Weighted Policy Learner, one tabular agent per task (the paper's routing-all-fc)",
    "q-tabular": "tabular Q-learning, one agent per task, epsilon-greedy",
    "q-approx": "approximate Q-learning, one MLP per task and depth, epsilon-greedy",
    "reinforce": "REINFORCE, one MLP policy per task and depth",
    "reinforce-single": "REINFORCE, one MLP policy per depth shared by all tasks",
    "dispatched-reinforce": "REINFORCE agents picked per sample by a learned dispatcher",
})
BASELINES = Registry("routing baseline", {
    "task-specific-1-fc": "shared trunk and FC layers, one last layer per task",
    "task-specific-all-fc": "shared trunk, all three FC layers per task",
    "soft-mixture-all-fc": "per layer a softmax-weighted sum of all blocks (soft routing)",
    "cross-stitch-all-fc": "one column per task mixed by learned cross-stitch units (Misra et al. 2016)",
})
ALGOS = Registry("routing algo", {**dict(ROUTING_POLICIES), **dict(BASELINES)})

WPL_FORMS = Registry("WPL form", {
    "printed": "the paper's Algorithm 3: Delta < 0 scaled by 1 - pi(a), Delta >= 0 by pi(a)",
    "original": "appendix 7.4 / Abdallah & Lesser 2006: Delta < 0 scaled by pi(a), Delta >= 0 by 1 - pi(a)",
})
COLLAB_REWARDS = Registry("collaboration reward", {
    "probability": "the average historical probability of the router choosing that block (the paper's choice)",
    "count": "the historical frequency with which that block was chosen",
})
ROUTING_MODES = Registry("routing mode", {
    "layered": "depth d chooses among the blocks of layer d",
    "recursive": "the dimension-compatible middle blocks can be chosen at any middle depth",
})


@dataclass
class LearnerConfig:
    """Hyper-parameters of one routing/baseline learner (paper defaults where it gives them)."""

    algo: str = "wpl"
    hidden: int = 48  # the paper's appendix; its text says 128
    channels: int = 32
    mode: str = "layered"  # layered | recursive
    n_middle: int = 1  # routed middle depths (3 routed layers in all by default)
    allow_pass: bool = False
    batch_size: int = 64
    lr: float = 0.01  # SGD, divided by 10 every lr_decay_every epochs
    lr_decay_every: int = 20
    #: SGD momentum. The paper's optimiser is plain SGD (0.0, the default); 0.9 reaches the same
    #: accuracies in far fewer steps, which is what a CPU budget needs (say which in any report).
    momentum: float = 0.0
    rho: float = 0.0  # collaboration reward weight (paper: 0.3 on MNIST-MTL, 0 on CIFAR-MTL / MIN-MTL)
    collab_reward: str = "probability"  # see COLLAB_REWARDS
    gamma: float = 1.0
    router_lr: float | None = None  # None: the router's default (0.1 tabular, 1e-3 MLPs)
    epsilon: float = 0.1
    min_prob: float = 0.001
    wpl_form: str = "printed"  # see WPL_FORMS
    wpl_baseline: str = "state"  # state | action: what WPL's R_hat averages (see WPLRouter)
    #: Remedy for route collisions, off by default (0.0 = the paper's uniform start): WPL agent t starts
    #: its first-depth policy as (1 - p) * uniform + p * onehot(block t). Under the printed form the
    #: uniform start is unstable, so early noise and the pooled collaboration reward decide where each
    #: agent commits and two tasks can lock onto one whole route; the bias keeps first blocks apart
    #: (see WPLRouter and docs/routing.md, "Route collisions"). In [0, 1).
    wpl_own_prior: float = 0.0
    samples_per_epoch: int = 0  # 0: the whole training split; else a fresh random subset each epoch
    device: str = "auto"  # moerl.core.devices.resolve_device: auto = the CUDA GPU if torch sees one, else CPU
    seed: int = 0


#: Keys that only some algos read (see ``RoutingLearner``): given for another algo they would be silently
#: ignored, so :func:`check_algo_keys` refuses them.
ALGO_ONLY_KEYS: dict[str, tuple[str, ...]] = {
    **{key: ("wpl",) for key in ("wpl_form", "wpl_baseline", "wpl_own_prior", "min_prob")},
    "epsilon": ("q-tabular", "q-approx"),
    **{key: tuple(ROUTING_POLICIES) for key in ("rho", "collab_reward", "gamma", "router_lr", "mode", "n_middle", "allow_pass")},
}


def check_algo_keys(algo: str, given: frozenset[str] | set[str]) -> None:
    """Refuse (one line) a key the user gave (``--config``, ``--set``) that ``algo`` does not read."""
    for key in sorted(given):
        readers = ALGO_ONLY_KEYS.get(key)
        if readers is not None and algo not in readers:
            who = f"the routers ({', '.join(readers)})" if readers == tuple(ROUTING_POLICIES) else ", ".join(readers)
            raise ConfigError(f"'{key}' does not apply to algo '{algo}': only {who} read it; "
                              f"remove it or choose one of those algos")


def check_own_prior(value: float) -> float:
    """Refuse (one line) a ``wpl_own_prior`` outside [0, 1): 1 would be a fixed route, not a prior."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"wpl_own_prior must be in [0, 1) (0 = the paper's uniform start), got {value}")
    return value


def validate_learner(cfg: LearnerConfig) -> LearnerConfig:
    """Raise :class:`ConfigError` (one line) for any bad learner value; return ``cfg`` otherwise."""
    # imports torch: validation runs when a run starts, not at CLI start-up
    from moerl.core.devices import resolve_device
    from moerl.core.seeding import check_seed

    ALGOS.check(cfg.algo)
    ROUTING_MODES.check(cfg.mode)
    WPL_FORMS.check(cfg.wpl_form)
    COLLAB_REWARDS.check(cfg.collab_reward)
    Registry("WPL baseline", {"state": "one average per (task, depth)",
                              "action": "one average per (task, depth, block)"}).check(cfg.wpl_baseline)
    check_own_prior(cfg.wpl_own_prior)
    resolve_device(cfg.device)  # refuses cuda where torch sees no GPU (one line)
    check_seed(cfg.seed)
    for name in ("hidden", "channels", "batch_size", "lr", "n_middle"):
        check_positive(name, getattr(cfg, name))
    for name in ("rho", "gamma", "epsilon", "min_prob", "samples_per_epoch", "lr_decay_every", "momentum"):
        check_positive(name, getattr(cfg, name), allow_zero=True)
    if cfg.batch_size < 2:
        raise ConfigError(f"batch_size must be at least 2 (batch norm), got {cfg.batch_size}")
    if cfg.router_lr is not None:
        check_positive("router_lr", cfg.router_lr)
    if cfg.allow_pass and cfg.mode == "layered" and cfg.n_middle < 1:
        raise ConfigError("allow_pass needs at least one middle depth (n_middle >= 1)")
    if cfg.min_prob * 64 > 1:
        raise ConfigError(f"min_prob must be small (<= 1/64), got {cfg.min_prob}")
    return cfg
