"""The MinAtar suites in torch (:class:`BatchedMinAtarSuite`) against the reference suite (:class:`MinAtarSuiteEnv`).

How the two are compared exactly: the reference suite plays the ``minatar`` package's games, which draw from a
numpy ``RandomState``; here each of its games gets the test oracles' stand-ins instead
(``tests/minatar_oracle_a.py`` / ``_b.py``: each call answered from our uniforms, mapped as the batched games map
them), fed the very slots of the batched suite's row of draws (its layout is documented: sticky slot, the
game's step slots, the task slot, the game's reset slots), and its sticky-action draw gets the sticky slot. The
suite's own ``env.seed`` call is made a no-op so that the stand-ins stay. Fed the same numbers and actions,
both must then show the same observations, rewards, terminations, truncations, tasks, blocks and
invalid-action flags at every step, through resets, CRL switches and sticky repeats. Where the numbers differ
(MTRL draws, and the package's own generator), the two agree in distribution (tested).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.batched import BatchedTaskSuite
from moerl.rl.envs.batched_minatar import ENV_STREAM, GAME_CLASSES, BatchedMinAtarSuite
from moerl.rl.envs.batched_suites import make_batched_suite
from moerl.rl.envs.minatar.games import GAMES

pytest.importorskip("minatar")
from moerl.rl.envs.minatar_suite import MinAtarSuiteEnv  # noqa: E402
from tests import minatar_oracle_a as oracle_a  # noqa: E402
from tests import minatar_oracle_b as oracle_b  # noqa: E402

torch.set_num_threads(1)
ALL = list(GAMES)  # asterix, breakout, freeway, seaquest, space_invaders: 10 channels, 6 actions
PLANS = {"asterix": oracle_b.ASTERIX_PLAN, "freeway": oracle_b.FREEWAY_PLAN, "seaquest": oracle_b.SEAQUEST_PLAN}


# ------------------------------------------------------------------ the reference driven by our draws
class _Sequential(oracle_a.UniformStandIn):
    """A stand-in answering calls in order from the slots loaded (Breakout, SpaceInvaders, the sticky draw)."""

    def load(self, row: np.ndarray) -> None:
        self._queue = [float(v) for v in row]


def _stand_in(game: str) -> _Sequential | oracle_b.StandIn:
    return oracle_b.StandIn(PLANS[game]) if game in PLANS else _Sequential()


class DrivenReference:
    """A reference suite whose games and sticky draws take the batched suite's slots (see the module docs)."""

    def __init__(self, batched: BatchedMinAtarSuite, **kwargs: object) -> None:
        self.env = MinAtarSuiteEnv(**kwargs)
        self.b = batched
        self.sticky, self.games = [], []
        for name, inner in zip(self.env.task_names, self.env._envs, strict=True):
            inner.seed = lambda *args, **kw: None  # keep the stand-ins (the suite re-seeds each reset)
            inner.random, inner.env.random = _Sequential(), _stand_in(name)
            self.sticky.append(inner.random)
            self.games.append(inner.env.random)

    def _load_resets(self, row: np.ndarray) -> None:
        for game, stand_in in zip(self.b.games, self.games, strict=True):
            stand_in.load(row[self.b.reset_slot:self.b.reset_slot + game.draws_per_reset])

    def reset(self, seed: int, row: np.ndarray) -> tuple[np.ndarray, dict]:
        self._load_resets(row)
        return self.env.reset(seed=seed)

    def step(self, action: int, row: np.ndarray) -> tuple:
        t = self.env.current_task
        self.sticky[t].load(row[self.b.STICKY_SLOT:self.b.STICKY_SLOT + 1])
        self.games[t].load(row[self.b.step_slot:self.b.step_slot + self.b.games[t].draws_per_step])
        out = self.env.step(action)
        if out[2] or out[3]:
            self._load_resets(row)
            out = (*out, self.env.reset())
        return out


def lockstep(seeds: list[int], steps: int, action_seed: int = 0, **kwargs: object) -> dict[str, int]:
    """The batched suite of ``seeds`` and one driven reference suite per seed, ``steps`` steps of the same
    uniformly random actions over the whole action space (out-of-set ones too); everything must agree."""
    batched = BatchedMinAtarSuite(MinAtarSuiteEnv(**kwargs), seeds)
    draws = SeedStreams(seeds, ENV_STREAM)  # the suite's own rows, drawn again (one per reset and per step)
    refs = [DrivenReference(batched, **kwargs) for _ in seeds]
    rng = np.random.default_rng(action_seed)
    row = draws.uniform(batched.draws_per_call, dtype=torch.float64).numpy()
    obs = batched.reset().numpy()
    for i, (ref, seed) in enumerate(zip(refs, seeds, strict=True)):
        ref_obs, info = ref.reset(seed, row[i])
        np.testing.assert_array_equal(obs[i], ref_obs, err_msg=f"reset env {i}")
        assert info["task_id"] == int(batched.task[i])
    counts = {"episodes": 0, "truncated": 0, "switches": 0, "invalid": 0, "sticky": 0, "reward": 0}
    for step in range(steps):
        actions = rng.integers(0, batched.n_actions, len(seeds))
        before = [r.env.current_task for r in refs]
        out = batched.step(torch.as_tensor(actions))
        row = draws.uniform(batched.draws_per_call, dtype=torch.float64).numpy()
        for i, ref in enumerate(refs):
            where = f"step {step} env {i} task {ref.env.task_names[before[i]]} action {actions[i]}"
            res = ref.step(int(actions[i]), row[i])
            ref_obs, reward, terminated, truncated, info = res[:5]
            np.testing.assert_array_equal(out.final_obs[i].numpy(), ref_obs, err_msg=where)
            assert float(out.reward[i]) == reward, where
            assert (bool(out.terminated[i]), bool(out.truncated[i])) == (terminated, truncated), where
            assert int(out.task_id[i]) == info["task_id"] and bool(out.invalid_action[i]) == info["invalid_action"]
            if terminated or truncated:
                next_obs, next_info = res[5]
                if "block" in next_info:
                    info = dict(info, block=next_info["block"])  # the block of the episode that starts
                np.testing.assert_array_equal(out.obs[i].numpy(), next_obs, err_msg=f"{where} (reset)")
                assert int(batched.task[i]) == next_info["task_id"], where
                counts["switches"] += next_info["task_id"] != info["task_id"]
            else:
                assert torch.equal(out.obs[i], out.final_obs[i])
            if "block" in info:
                assert int(batched.block[i]) == info["block"], where
            assert int(batched.task[i]) == ref.env.current_task, where
            counts["episodes"] += terminated
            counts["truncated"] += truncated
            counts["invalid"] += info["invalid_action"]
            counts["reward"] += reward != 0
        counts["sticky"] += int((torch.as_tensor(row[:, 0]) < (kwargs.get("sticky_action_prob") or 0)).sum())
    return counts


# ------------------------------------------------------------------ (a) CRL schedules
def test_crl_schedules_are_the_reference_suites_per_seed():
    """The table of blocks (random order: one permutation per cycle from the seed) is the reference's."""
    spec = MinAtarSuiteEnv(ALL, "crl", block_steps=100, cycles=3, order="random")
    batched = BatchedMinAtarSuite(spec, [0, 1, 2, 3])
    for i, seed in enumerate([0, 1, 2, 3]):
        spec.reset(seed=seed)
        assert batched.schedule_tasks[i].tolist() == [b["task_id"] for b in spec.schedule()]
    assert len({tuple(row) for row in batched.schedule_tasks.tolist()}) > 1  # the seeds' orders differ


def test_a_crl_run_switches_at_the_same_steps_and_plays_the_same_episodes_as_the_reference():
    """Whole CRL runs (random order, two cycles over the five games, the full action set, no ramping, sticky
    actions): the task at every step, the block, every observation and episode end as the reference's."""
    counts = lockstep([3, 8], steps=5 * 2 * 60 + 60, games=ALL, mode="crl", block_steps=60, cycles=2,
                      order="random", max_episode_steps=40, action_set="full", ramping=False,
                      sticky_action_prob=0.25)
    assert counts["switches"] >= 2 * (5 * 2 - 2) and counts["truncated"] > 0 and counts["episodes"] > 0
    assert counts["sticky"] > 0 and counts["reward"] > 0


# ------------------------------------------------------------------ (b) layout
def test_observations_masks_and_step_fields_have_the_reference_layout():
    spec = MinAtarSuiteEnv(["breakout", "seaquest"], "mtrl")  # 4 channels padded to Seaquest's 10
    batched = BatchedMinAtarSuite(spec, range(6))
    assert (batched.obs_dim, batched.base_obs_dim, batched.grid_shape) == (1002, 1000, (10, 10, 10))
    assert batched.obs_dtype == torch.uint8 and batched.task_names == spec.task_names
    assert batched.valid_actions.tolist() == spec.valid_actions.tolist() and batched.n_actions == spec.action_space.n
    np.testing.assert_array_equal(batched.return_bounds, spec.return_bounds)
    obs = batched.reset()
    assert obs.shape == (6, *spec.observation_space.shape) and obs.dtype == torch.uint8
    for _ in range(50):
        out = batched.step(torch.randint(0, 6, (6,)))
        for name in ("obs", "final_obs"):
            value = getattr(out, name)
            assert value.dtype == torch.uint8 and set(value.unique().tolist()) <= {0, 1}
            grid = value[:, :1000].reshape(6, 10, 10, 10)
            breakout = batched.task == 0 if name == "obs" else out.task_id == 0
            assert not grid[breakout][..., 4:].any()  # Breakout's padded channels are zero
            assert torch.equal(value[:, 1000:].argmax(1), batched.task if name == "obs" else out.task_id)
            assert value[:, 1000:].sum(1).eq(1).all()
        assert out.reward.dtype == torch.float32 and out.terminated.dtype == out.truncated.dtype == torch.bool
        assert out.task_id.dtype == torch.int64 and out.invalid_action.dtype == torch.bool
        assert out.episode_return.dtype == torch.float64 and out.episode_length.dtype == torch.int64
    plain = BatchedMinAtarSuite(MinAtarSuiteEnv(task_onehot=False), [0])
    assert plain.reset().shape == (1, 600)
    assert isinstance(make_batched_suite(spec, [0]), BatchedMinAtarSuite)
    from moerl.rl.envs.suite import TaskSuiteEnv

    assert isinstance(make_batched_suite(TaskSuiteEnv("cartpole"), [0]), BatchedTaskSuite)
    with pytest.raises(ValueError, match="must share their ramping"):
        BatchedMinAtarSuite([spec, MinAtarSuiteEnv(["breakout", "seaquest"], ramping=False)], [0, 1])
    with pytest.raises(ValueError, match=r"action 6 is not in Discrete\(6\)"):
        batched.step(torch.tensor([0, 1, 2, 3, 4, 6]))


# ------------------------------------------------------------------ (c) every game, exactly
@pytest.mark.parametrize("game", ALL)
def test_each_game_through_the_suite_plays_the_reference_suites_episodes(game):
    """Each game pinned (``fixed_task``) in the five-game suite (padding to 10 channels, the minimal sets with
    out-of-set actions mapped, sticky actions, ramping, truncation at 60 steps): the reference suite fed the
    same draws gives the same observations, rewards, ends and flags at every step, resets included."""
    counts = lockstep([0, 1, 2], steps=250, action_seed=ALL.index(game), games=ALL, fixed_task=game,
                      max_episode_steps=60, sticky_action_prob=0.3)
    assert counts["episodes"] + counts["truncated"] > 3 and counts["sticky"] > 0
    if game != "seaquest":  # Seaquest's set is all six actions: nothing is out of it
        assert counts["invalid"] > 0
    if game in ("breakout", "asterix", "space_invaders"):
        assert counts["reward"] > 0


def test_a_game_state_put_in_steps_as_the_underlying_batched_game():
    """One step through the suite from a game state put in: the suite's obs, reward and end are those of the
    batched game stepped directly with the same (full-set) actions and draws."""
    spec = MinAtarSuiteEnv(ALL, "mtrl", fixed_task="space_invaders")
    batched = BatchedMinAtarSuite(spec, range(4))
    batched.reset()
    game = GAME_CLASSES["space_invaders"](True)
    state = game.reset(torch.zeros(4, 0, dtype=torch.float64))
    for _ in range(40):  # a state some way into the game
        state, _, _ = game.step(state, torch.tensor([5, 1, 3, 0]), torch.zeros(4, 0, dtype=torch.float64))
    batched._states[4] = {k: v.clone() for k, v in state.items()}
    actions = torch.tensor([0, 1, 2, 3])  # minimal set (noop, left, right, fire): full-set 0, 1, 3, 5
    out = batched.step(actions)
    nxt, reward, terminal = game.step(state, torch.tensor([0, 1, 3, 5]), torch.zeros(4, 0, dtype=torch.float64))
    grid = game.observe(nxt).to(torch.uint8)
    assert torch.equal(out.final_obs[:, :1000].reshape(4, 10, 10, 10)[..., :6], grid)
    assert torch.equal(out.reward, reward) and torch.equal(out.terminated, terminal)


# ------------------------------------------------------------------ (d) per-seed streams
def _own_actions(seeds: list[int]) -> SeedStreams:
    return SeedStreams(seeds, purpose=99)  # each env's actions from its own seed: the same in any batch


@pytest.mark.parametrize("game", ALL)
def test_every_games_step_and_reset_return_tensors_of_their_own(game):
    """The suite restarts ended episodes by writing fresh states into the step's output in place
    (``base.put_rows_``): safe only because a step and a reset never hand back the input state's memory or a
    cached constant. Checked over 300 random steps with restarts, at batch sizes that change (as in MTRL)."""
    from moerl.rl.envs.minatar.base import put_rows_

    cls = GAME_CLASSES[game]
    g = cls()
    streams = SeedStreams(range(64), 7, torch.device("cpu"))
    state = g.reset(streams.uniform(g.draws_per_reset, dtype=torch.float64))
    minimal = torch.tensor(g.spec.minimal_actions)
    seen_resets: set[int] = set()
    kept = []  # every reset's output stays alive, so no address of it can be handed out again by the allocator
    for t in range(300):
        action = minimal[torch.randint(len(minimal), (64,), generator=torch.Generator().manual_seed(t))]
        nxt, _, terminal = g.step(state, action, streams.uniform(g.draws_per_step, dtype=torch.float64))
        inputs = {v.untyped_storage().data_ptr() for v in state.values()}
        assert not inputs & {v.untyped_storage().data_ptr() for v in nxt.values()}, t
        u_reset = streams.uniform(g.draws_per_reset, dtype=torch.float64)
        ended = terminal.nonzero().squeeze(1)
        for size in (len(ended), 64):  # a reset of the ended rows (any size), and of all
            fresh = g.reset(u_reset[:size])
            ptrs = {v.untyped_storage().data_ptr() for v in fresh.values() if v.numel()}  # (an empty one has none)
            assert not ptrs & inputs and not ptrs & seen_resets, t  # never memory handed out before
            seen_resets |= ptrs
            kept.append(fresh)
        state = put_rows_(nxt, ended, g.reset(u_reset.index_select(0, ended))) if len(ended) else nxt
    assert seen_resets


def test_an_environments_episodes_depend_on_its_seed_only_and_the_state_round_trips():
    """Seed 7 alone and inside a batch of four (MTRL over five games: tasks drawn, rows moving between the
    games' batches, sticky actions) plays the same; a state_dict reloads exactly, also cut to a subset of the
    environments (as the engine's ``select`` cuts it)."""
    spec = MinAtarSuiteEnv(ALL, "mtrl", sticky_action_prob=0.2, max_episode_steps=80)
    many_seeds = [3, 7, 11, 12]
    many, alone = BatchedMinAtarSuite(spec, many_seeds), BatchedMinAtarSuite(spec, [7])
    acts_many, acts_alone = _own_actions(many_seeds), _own_actions([7])
    assert torch.equal(many.reset()[1], alone.reset()[0])
    tasks_seen = set()
    for _ in range(250):
        out_m = many.step(acts_many.integers(6, 1)[:, 0])
        out_a = alone.step(acts_alone.integers(6, 1)[:, 0])
        for name in ("obs", "final_obs", "reward", "terminated", "truncated", "task_id", "episode_return"):
            assert torch.equal(getattr(out_m, name)[1], getattr(out_a, name)[0]), name
        tasks_seen.update(many.task.tolist())
    assert tasks_seen == set(range(5))
    saved = many.state_dict()
    copy = BatchedMinAtarSuite(spec, many_seeds)
    copy.load_state_dict(saved)
    sub = BatchedMinAtarSuite(spec, [11, 7])
    rows = torch.tensor([2, 1])
    sub.load_state_dict({k: (v if k == "streams" else v.index_select(0, rows)) for k, v in saved.items()})
    acts_copy = _own_actions(many_seeds)
    acts_copy.counter = acts_many.counter
    acts_sub = _own_actions([11, 7])
    acts_sub.counter = acts_many.counter
    for _ in range(80):
        out = many.step(acts_many.integers(6, 1)[:, 0])
        assert torch.equal(copy.step(acts_copy.integers(6, 1)[:, 0]).obs, out.obs)
        assert torch.equal(sub.step(acts_sub.integers(6, 1)[:, 0]).obs, out.obs[rows])


def test_a_batch_of_suites_with_their_own_settings_steps_each_as_it_would_alone():
    specs = [MinAtarSuiteEnv(mode="crl", block_steps=50), MinAtarSuiteEnv(mode="crl", block_steps=80, order="random"),
             MinAtarSuiteEnv(task_probs=[0.6, 0.2, 0.2]), MinAtarSuiteEnv(fixed_task="breakout"),
             MinAtarSuiteEnv(sticky_action_prob=0.5, max_episode_steps=30)]
    seeds = [1, 2, 3, 4, 5]
    mixed = BatchedMinAtarSuite(specs, seeds)
    alone = [BatchedMinAtarSuite(s, [seed]) for s, seed in zip(specs, seeds, strict=True)]
    first = mixed.reset()
    assert all(torch.equal(first[i], a.reset()[0]) for i, a in enumerate(alone))
    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(250):
        actions = torch.as_tensor(rng.integers(0, 5, len(seeds)))
        out = mixed.step(actions)
        for i, single in enumerate(alone):
            one = single.step(actions[i:i + 1])
            assert torch.equal(out.obs[i], one.obs[0]) and torch.equal(out.final_obs[i], one.final_obs[0])
            assert int(mixed.block[i]) == int(single.block[0])
        differ += int(mixed.block[0]) != int(mixed.block[1])
    assert differ > 0 and int(mixed.block[1]) >= 1 and int(mixed.task[3]) == 1  # the schedules really differ
    assert int(mixed.episode_steps[4]) <= 30


# ------------------------------------------------------------------ (e) statistics with the package's own numbers
def _policy(game: str) -> np.ndarray:
    """A fixed random policy over the game's minimal set: uniform, except Freeway's, which goes up two times in
    three (no-op, up, down: 1/6, 2/3, 1/6), so that its chicken crosses and returns vary within 300 steps."""
    n = len(GAMES[game].minimal_actions)
    return np.array([1 / 6, 2 / 3, 1 / 6]) if game == "freeway" else np.full(n, 1 / n)


def _reference_episodes(game: str, episodes: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    env = MinAtarSuiteEnv(ALL, fixed_task=game, max_episode_steps=limit)
    rng = np.random.default_rng(1)
    probs = _policy(game)
    lengths, returns = [], []
    env.reset(seed=0)
    ret, length = 0.0, 0
    while len(lengths) < episodes:
        _, reward, terminated, truncated, _ = env.step(int(rng.choice(len(probs), p=probs)))
        ret, length = ret + reward, length + 1
        if terminated or truncated:
            lengths.append(length)
            returns.append(ret)
            ret, length = 0.0, 0
            env.reset()
    return np.asarray(lengths), np.asarray(returns)


def _batched_episodes(game: str, per_env: int, n_envs: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_env`` episodes of each of ``n_envs`` environments (not the first episodes to end in the
    batch, which would favour short ones)."""
    spec = MinAtarSuiteEnv(ALL, fixed_task=game, max_episode_steps=limit)
    batched = BatchedMinAtarSuite(spec, range(100, 100 + n_envs))
    batched.reset()
    probs = torch.as_tensor(_policy(game)).expand(n_envs, -1)
    gen = torch.Generator().manual_seed(2)
    count = torch.zeros(n_envs, dtype=torch.int64)
    lengths: list[int] = []
    returns: list[float] = []
    while bool((count < per_env).any()):
        out = batched.step(torch.multinomial(probs, 1, generator=gen)[:, 0])
        keep = out.done & (count < per_env)
        count += out.done
        lengths += out.episode_length[keep].tolist()
        returns += out.episode_return[keep].tolist()
    return np.asarray(lengths), np.asarray(returns)


@pytest.mark.parametrize(("game", "per_env", "n_envs", "limit"), [
    ("asterix", 4, 64, 1000), ("breakout", 8, 64, 1000), ("freeway", 2, 48, 300), ("seaquest", 6, 64, 1000),
    ("space_invaders", 4, 64, 300)])
def test_a_random_policy_has_the_reference_suites_episode_statistics(game, per_env, n_envs, limit):
    """A fixed random policy (:func:`_policy`), the package's own RandomState on one side and our streams on the
    other: mean episode length and return per game agree within 4 standard errors of their difference plus a
    small slack (0.5 steps, 0.1 points) for the discreteness of short episodes. Why 4: the difference of two
    independent means over >= 96 episodes is close to normal, so 4 standard errors leave a false alarm of
    about 6e-5 per comparison (10 comparisons: under 1e-3), while a real bias (a wrong spawn probability, a
    draw used twice) shows as several standard errors with these counts. The exact lockstep tests above check
    every rule; this one checks that our streams serve the games as the package's generator does. Freeway and
    SpaceInvaders are cut at 300 steps (truncation, as both sides apply it) to keep the test short; Freeway's
    episodes then all last 300 steps, and only their returns vary."""
    ours = _batched_episodes(game, per_env, n_envs, limit)
    theirs = _reference_episodes(game, per_env * n_envs, limit)
    for what, a, b, slack in (("length", ours[0], theirs[0], 0.5), ("return", ours[1], theirs[1], 0.1)):
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) < 4 * se + slack, (game, what, a.mean(), b.mean(), se)


def test_mtrl_task_draws_follow_the_task_probabilities():
    probs = [0.5, 0.3, 0.2]
    spec = MinAtarSuiteEnv(["breakout", "space_invaders", "asterix"], task_probs=probs, max_episode_steps=5)
    n_envs = 64
    batched = BatchedMinAtarSuite(spec, range(n_envs))
    batched.reset()
    counts = np.zeros(3)
    for _ in range(150):
        out = batched.step(torch.zeros(n_envs, dtype=torch.int64))
        counts += np.bincount(out.task_id[out.done].numpy(), minlength=3)
    total = counts.sum()
    for k, p in enumerate(probs):
        assert abs(counts[k] / total - p) < 4 * np.sqrt(p * (1 - p) / total) + 0.01, (k, counts)


# ------------------------------------------------------------------ (f) the engine and moerl train --seeds
def test_the_engine_trains_on_a_minatar_suite_with_a_uint8_replay_and_evaluates_per_task():
    from moerl.rl.engine.batched_dqn import BatchedDQN

    spec = MinAtarSuiteEnv(mode="crl", block_steps=200, max_episode_steps=60)
    network = {"arch": "big", "router": "softmoe", "hidden": 16}
    hp = {"learning_starts": 100, "batch_size": 16, "buffer_size": 500, "target_update_interval": 100}
    agent = BatchedDQN(spec, [0, 1], network, hp)
    buffer = agent.buffer
    assert buffer.observations.dtype == buffer.next_observations.dtype == torch.uint8
    assert buffer.observations.nbytes == 2 * 500 * 603  # bytes, not float32's four times as many
    agent.learn(650)
    assert agent.n_updates > 0 and {int(t) for _, _, tasks, _, _ in agent.log.episodes for t in tasks} >= {0, 1}
    stored = buffer.observations[:, :300]
    assert set(stored.unique().tolist()) == {0, 1} and torch.equal(stored[:, :, 600:].sum(2), torch.ones(2, 300,
                                                                                                       dtype=torch.uint8))
    returns = agent.evaluate(spec, 2, seed=0, tasks=[0, 1, 2])
    assert returns.shape == (2, 3, 2)
    for task in range(3):  # the per-task batch equals evaluating the suite pinned to that task
        pinned = MinAtarSuiteEnv(mode="crl", block_steps=200, max_episode_steps=60, fixed_task=task)
        np.testing.assert_array_equal(agent.evaluate(pinned, 2, seed=0), returns[:, task])
    # checkpoints and members leaving the batch carry the games' states
    again = BatchedDQN(spec, [0, 1], network, hp)
    again.load_state_dict(agent.state_dict())
    alone = agent.select([1])
    agent.learn(700), again.learn(700), alone.learn(700)
    assert torch.equal(agent.env.observation(), again.env.observation())
    assert torch.equal(agent.env.observation()[1:], alone.env.observation())


def test_moerl_train_seeds_runs_a_minatar_suite_batched(tmp_path, monkeypatch):
    """``moerl train --env minatar-crl --seeds 0-1`` picks the batched engine (``auto``), writes one run directory
    per seed with per-task evaluations, and its replay buffers hold bytes."""
    import json

    from moerl.cli import main
    from moerl.rl.algos.replay import BatchedReplayBuffer
    from moerl.rl.engine import batched_dqn

    buffers: list[BatchedReplayBuffer] = []

    class Recorded(BatchedReplayBuffer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            buffers.append(self)

    monkeypatch.setattr(batched_dqn, "BatchedReplayBuffer", Recorded)
    args = ["train", "--env", "minatar-crl", "--arch", "big", "--router", "softmoe", "--seeds", "0-1",
            "--timesteps", "2000", "--set", "env_kwargs.block_steps=600", "--set", "env_kwargs.max_episode_steps=100",
            "--set", "eval.freq=1000", "--set", "eval.episodes=1", "--set", "eval.final_episodes=2",
            "--set", "dqn.learning_starts=500", "--set", "network.hidden=16", "--no-progress",
            "--logdir", str(tmp_path)]
    assert main(args) == 0
    runs = sorted(tmp_path.iterdir())
    assert [r.name[-3:] for r in runs] == ["_s0", "_s1"]
    tasks = ["space_invaders", "breakout", "asterix"]
    for run in runs:
        rows = (run / "eval.csv").read_text().splitlines()
        header, body = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","), strict=True)) for r in rows[1:]]
        assert header[:2] == ["step", "task"]
        assert [(b["step"], b["task"]) for b in body] == [(str(s), t) for s in (0, 1000, 2000) for t in tasks]
        results = json.loads((run / "results.json").read_text())
        assert results["engine"] == "batched" and set(results["final_eval"]) == set(tasks)
        assert results["continual"] is not None
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        assert (run / "model.zip").exists() and (run / "schedule.json").exists()
    (buffer,) = buffers
    assert buffer.observations.dtype == torch.uint8 and buffer.observations.shape == (2, 600, 603)
    assert buffer.observations.nbytes + buffer.next_observations.nbytes == 2 * 2 * 600 * 603


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_the_suite_plays_as_on_the_cpu():
    spec = MinAtarSuiteEnv(ALL, "mtrl", sticky_action_prob=0.2, max_episode_steps=50)
    cpu, cuda = BatchedMinAtarSuite(spec, range(6)), BatchedMinAtarSuite(spec, range(6), device="cuda")
    assert torch.equal(cpu.reset(), cuda.reset().cpu())
    rng = np.random.default_rng(0)
    for _ in range(200):
        actions = torch.as_tensor(rng.integers(0, 6, 6))
        a, b = cpu.step(actions), cuda.step(actions.cuda())
        assert torch.equal(a.obs, b.obs.cpu()) and torch.equal(a.final_obs, b.final_obs.cpu())
        assert torch.equal(a.reward, b.reward.cpu()) and torch.equal(a.done, b.done.cpu())
