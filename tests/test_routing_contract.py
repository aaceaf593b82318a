"""Routing-line contracts: seeds, devices, one config schema, registries, collaboration reward, collisions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from moerl.core.devices import resolve_device
from moerl.core.errors import ConfigError
from moerl.routing.baselines import BASELINES as BASELINE_CLASSES
from moerl.routing.collisions import collision_groups, route_collisions, task_routes
from moerl.routing.config import ALGOS, BASELINES, ROUTING_POLICIES, LearnerConfig
from moerl.routing.data import BUILDERS, DATASETS, build_digits_mtl
from moerl.routing.experiment import FAMILY, RoutingConfig, resolve_config
from moerl.routing.mdp import RoutingMDPEnv, UsageStats, collaboration_rewards
from moerl.routing.policies import ROUTER_ALGOS, Trace, WPLRouter
from moerl.routing.trainer import RoutingLearner
from moerl.runs.kinds import TrainRequest

torch.set_num_threads(1)
TINY = {"hidden": 8, "channels": 4, "samples_per_epoch": 192, "device": "cpu"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return build_digits_mtl(seed=0)


# -- seeds ----------------------------------------------------------------------------------------------
def _snapshot(learner: RoutingLearner) -> dict[str, np.ndarray]:
    out = {f"model.{k}": v.detach().cpu().numpy().copy() for k, v in learner.model.state_dict().items()}
    router = learner.router
    if hasattr(router, "net"):
        out.update({f"router.{k}": v.detach().cpu().numpy().copy() for k, v in router.net.state_dict().items()})
    if hasattr(router, "pi"):
        out["router.pi"] = router.pi.copy()
    out["usage"] = learner.usage.counts.copy()
    return out


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("algo", ["reinforce", "wpl"])
def test_learners_do_not_depend_on_build_or_training_order(digits, algo):
    def alone(seed):
        learner = RoutingLearner(digits, algo=algo, seed=seed, **TINY)
        built = _snapshot(learner)
        learner.learn(2)
        return built, _snapshot(learner), learner.evaluate("test")["accuracy"]

    ref = {0: alone(0), 1: alone(1)}
    first = next(k for k in ref[0][0] if k.endswith("weight"))
    assert not np.array_equal(ref[0][0][first], ref[1][0][first])  # the seeds do matter
    global_state = torch.get_rng_state()
    b = RoutingLearner(digits, algo=algo, seed=1, **TINY)  # order B, A
    torch.rand(7)  # someone else draws from the global stream between the builds and the steps
    a = RoutingLearner(digits, algo=algo, seed=0, **TINY)
    _assert_same(_snapshot(a), ref[0][0])
    _assert_same(_snapshot(b), ref[1][0])
    for _ in range(2):  # interleaved training epochs
        b.learn(1)
        torch.randn(3)
        a.learn(1)
    _assert_same(_snapshot(a), ref[0][1])
    _assert_same(_snapshot(b), ref[1][1])
    assert a.evaluate("test")["accuracy"] == ref[0][2] and b.evaluate("test")["accuracy"] == ref[1][2]
    torch.set_rng_state(global_state)


def test_routers_never_touch_the_global_torch_generator():
    state = torch.get_rng_state()
    for algo in ROUTER_ALGOS:
        from moerl.routing.policies import make_router

        r = make_router(algo, 2, [3, 3], [4, 4], seed=3)
        v, t = torch.ones(5, 4), torch.tensor([0, 1, 0, 1, 1])
        acts = np.stack([r.act(v, t, d).numpy() for d in range(2)], 1)
        r.update(Trace([v, v], t, acts, np.zeros((5, 2)), np.ones(5), r.pop_extra()))
    assert torch.equal(torch.get_rng_state(), state)


# -- devices ---------------------------------------------------------------------------------------------
def test_learner_puts_model_router_and_data_on_the_resolved_device(digits):
    learner = RoutingLearner(digits, algo="reinforce", **{**TINY, "device": "auto"})
    assert learner.device == resolve_device("auto")
    tensors = [*learner.model.parameters(), *learner.router.net.parameters()]
    assert all(p.device.type == learner.device.type for p in tensors)
    seen = []
    learner.model.trunk.register_forward_pre_hook(lambda module, args: seen.append(args[0].device))
    learner.learn(1)
    assert seen and all(d.type == learner.device.type for d in seen)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_config(TrainRequest(env="digits-mtl", logdir=str(tmp_path), options={"device": "cuda"}))
    assert "'cuda'" in str(err.value) and "\n" not in str(err.value)


# -- one schema, registries --------------------------------------------------------------------------------
def test_run_config_is_the_learner_config_plus_run_keys():
    learner_keys = [f.name for f in dataclasses.fields(LearnerConfig)]
    run_keys = [f.name for f in dataclasses.fields(RoutingConfig)]
    assert issubclass(RoutingConfig, LearnerConfig) and run_keys[: len(learner_keys)] == learner_keys
    assert set(run_keys) - set(learner_keys) == {"env", "epochs", "data_dir", "data_seed", "eval_every",
                                                    "checkpoint_every"}
    assert len(run_keys) == len(set(run_keys))


@pytest.mark.parametrize("path", sorted((REPO / "moerl" / "configs" / "routing").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(path):
    cfg = resolve_config(TrainRequest(config=str(path), overrides=["device=cpu"]))
    assert cfg.env in DATASETS and cfg.algo in ALGOS
    import yaml

    for key, value in yaml.safe_load(path.read_text()).items():
        assert getattr(cfg, key) == value


def test_registries_are_the_one_list():
    assert tuple(ROUTER_ALGOS) == ROUTING_POLICIES.names and tuple(BASELINE_CLASSES) == BASELINES.names
    assert ALGOS.names == ROUTING_POLICIES.names + BASELINES.names
    assert tuple(BUILDERS) == DATASETS.names
    assert FAMILY.list_envs() == list(DATASETS.items())
    assert all(FAMILY.matches(name) for name in DATASETS) and not FAMILY.matches("CartPole-v1")
    with pytest.raises(ConfigError, match="unknown routing dataset 'mnist-mt'"):
        resolve_config(TrainRequest(env="mnist-mt"))
    with pytest.raises(ConfigError, match="unknown WPL form 'orig'"):
        resolve_config(TrainRequest(env="digits-mtl", overrides=["wpl_form=orig"]))
    with pytest.raises(ConfigError, match="unknown collaboration reward 'freq'"):
        resolve_config(TrainRequest(env="digits-mtl", overrides=["collab_reward=freq"]))


# -- collaboration reward ---------------------------------------------------------------------------------
def test_collaboration_reward_average_probability_by_hand():
    probs = np.array([[[0.5, 0.3, 0.2]], [[0.1, 0.1, 0.8]]])  # two past decisions at one depth
    actions = np.array([[0], [2]])
    avg_p, freq = UsageStats(1, 3, "probability"), UsageStats(1, 3, "count")
    avg_p.update(actions, probs)
    freq.update(actions)
    np.testing.assert_allclose(avg_p.frequency(), [[0.3, 0.2, 0.5]])  # (0.5+0.1)/2, (0.3+0.1)/2, (0.2+0.8)/2
    np.testing.assert_allclose(freq.frequency(), [[0.5, 0.0, 0.5]])
    np.testing.assert_allclose(collaboration_rewards(np.array([[1]]), avg_p, 0.5), [[0.1]])
    np.testing.assert_allclose(collaboration_rewards(np.array([[1]]), freq, 0.5), [[0.0]])
    with pytest.raises(ValueError, match="probabilities"):
        avg_p.update(actions)


def test_learner_pools_the_agents_probabilities(digits):
    # A fresh WPL table is uniform over the 10 blocks for every task, so after one batch the average
    # historical probability is exactly 0.1 for every block and depth, whatever was sampled; the count
    # variant records the sampled blocks.
    for mode in ("probability", "count"):
        learner = RoutingLearner(digits, algo="wpl", collab_reward=mode, rho=0.3, **TINY)
        x, t, y = digits.tensors(digits.train, np.arange(64))
        learner.train_batch(x, t, y)
        freq = learner.usage.frequency()
        if mode == "probability":
            np.testing.assert_allclose(freq, 0.1)
        else:
            np.testing.assert_allclose(freq, learner.choice_counts.sum(0) / 64)
            assert not np.allclose(freq, 0.1)


def test_env_probability_mode_takes_the_agents_probabilities(digits):
    env = RoutingMDPEnv(digits, rho=0.3, hidden=8, channels=4, train_blocks=False, collab_reward="probability")
    WPLRouter(env, seed=0).learn(total_timesteps=3)  # one episode, three decisions from uniform tables
    np.testing.assert_allclose(env.usage.counts, 0.1)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="set_action_probs"):
        env.step(0)


# -- route collisions -------------------------------------------------------------------------------------
def test_route_collisions_by_hand():
    routes = np.array([[0, 1], [0, 1], [2, 3], [0, 1]])
    # pairs (0,1), (0,3), (1,3) share a route out of 6 pairs; routes {(0,1), (2,3)}
    assert route_collisions(routes) == {"collision_fraction": 0.5, "distinct_routes": 2.0,
                                        "collision_groups": [[0, 1, 3]], "collided_tasks": 3}
    assert route_collisions(np.array([[0], [1], [2]])) == {"collision_fraction": 0.0, "distinct_routes": 3.0,
                                                           "collision_groups": [], "collided_tasks": 0}
    # what the collision costs: tasks 0, 1, 3 share a route (mean 0.9), task 2 has its own (0.99)
    cost = route_collisions(routes, [0.91, 0.89, 0.99, 0.90])
    assert cost["collided_accuracy"] == pytest.approx(0.9) and cost["free_accuracy"] == pytest.approx(0.99)
    assert route_collisions(np.array([[0], [1]]), [0.5, 0.7])["collided_accuracy"] is None
    # two groups, ordered by their first task; a task without samples (-1 route) never collides
    six = np.array([[4, 4], [1, 2], [-1, -1], [1, 2], [4, 4], [-1, -1]])
    assert collision_groups(six) == [[0, 4], [1, 3]]
    assert route_collisions(six)["collision_fraction"] == pytest.approx(2 / 15)
    assert route_collisions(six)["distinct_routes"] == 2.0
    samples = np.array([[0, 1], [0, 1], [2, 2], [1, 1], [1, 1], [3, 3], [5, 5]])
    task = np.array([0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(task_routes(samples, task, 4), [[0, 1], [1, 1], [3, 3], [-1, -1]])


def test_docs_algo_table_is_the_registry():
    assert ALGOS.markdown(("algo", "what it is")) in (REPO / "docs" / "routing.md").read_text()
