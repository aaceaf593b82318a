"""Router agents for routing networks: WPL, tabular and approximate Q-learning, REINFORCE, dispatched.

Why one module: every router answers the same two questions, "which block for these samples at this
depth?" (:meth:`Router.act`) and "learn from these traces" (:meth:`Router.update`). The batched
trainer (:mod:`moerl.routing.trainer`) asks them per mini-batch; on the Gymnasium routing MDP
(:mod:`moerl.routing.mdp`) the same agents offer SB3's surface: ``WPLRouter(env)``,
``learn(total_timesteps)``, ``predict(obs, deterministic=True)``, ``save``/``load``.

Returns follow the paper's definition exactly, ``R_i = r_final + sum_{j>=i} gamma^(j-i) r_j``
(:func:`moerl.routing.mdp.compute_returns`); the collaboration reward ``rho`` is applied once,
by the reward rule, never by an agent. Bugs of the public code that are *not* reproduced here:
returns summed twice, ``rho`` applied twice or not at all, a sign flipped in the WPL update, and
Q-learning targets that subtract the immediate reward.

Randomness and devices: numpy draws come from the router's own ``np.random.default_rng(seed)``, torch
draws (sampling from MLP policies, epsilon exploration) from its own :class:`~moerl.core.seeding.TorchStream`,
and MLP parameters are built inside :func:`~moerl.core.seeding.seeded`; no router touches torch's global
generator, so routers built or used in any order give the same results. ``device`` is where an MLP
router's network lives and where every router returns its actions (tables stay in numpy).

Every ``act`` also records the probabilities with which it chose (``trace.extra["probs"][depth]``,
(B, n_actions)): the paper's collaboration reward is "the average historical probability of the router
choosing that block", so the learner needs them.

Mini-batch form of the tabular updates: the paper updates per trace; we update once per mini-batch
per visited (task, depth, action) with the mean return of the samples that took it. With one sample
per batch (the env) this is exactly the per-trace rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moerl.core.seeding import TorchStream, seeded
from moerl.routing.config import ROUTING_POLICIES, WPL_FORMS, check_own_prior
from moerl.routing.mdp import compute_returns


@dataclass
class Trace:
    """A batch of routes: what every update needs."""

    states: list[torch.Tensor]  # per depth, (B, dim_in(d)), detached
    task: torch.Tensor  # (B,)
    actions: np.ndarray  # (B, n_depths) int
    rewards: np.ndarray  # (B, n_depths) immediate (collaboration) rewards
    r_final: np.ndarray  # (B,)
    extra: dict[str, Any] = field(default_factory=dict)


class Router:
    """Base class. ``depth_actions[d]`` is the number of actions at depth ``d``; ``state_dims[d]`` the width of v."""

    name = "router"

    def __init__(self, n_tasks: Any, depth_actions: list[int] | None = None, state_dims: list[int] | None = None,
                 *, gamma: float = 1.0, seed: int = 0, env: Any = None, device: str | torch.device = "cpu", **_: Any):
        if not isinstance(n_tasks, (int, np.integer)):  # ``Router(env, ...)``, as in SB3
            env = n_tasks
            base = env.unwrapped
            n_tasks, depth_actions, state_dims = base.dataset.n_tasks, base.depth_actions, base.state_dims
        assert depth_actions is not None and state_dims is not None
        self.n_tasks, self.depth_actions, self.state_dims = n_tasks, list(depth_actions), list(state_dims)
        self.n_depths, self.max_actions = len(depth_actions), max(depth_actions)
        self.gamma = gamma
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stream = TorchStream(seed)
        self.device = torch.device(device)
        self.env = env
        self.kwargs: dict[str, Any] = {"gamma": gamma, "seed": seed}
        self._extra: dict[str, Any] = {}

    # -- the two core questions -----------------------------------------------------------------
    def act(self, v: torch.Tensor, task: torch.Tensor, depth: int, deterministic: bool = False) -> torch.Tensor:
        """Blocks (B,) for samples ``v`` (B, dim) of tasks ``task`` (B,) at ``depth``, on ``self.device``."""
        with self.stream:
            a = self._act(v, task, depth, deterministic)
        return a.to(self.device)

    def _act(self, v: torch.Tensor, task: torch.Tensor, depth: int, deterministic: bool) -> torch.Tensor:
        raise NotImplementedError

    def _record_probs(self, depth: int, probs: np.ndarray | torch.Tensor) -> None:
        """Keep the (B, n_actions) probabilities of this decision for the collaboration reward."""
        if isinstance(probs, torch.Tensor):
            probs = probs.detach().cpu().numpy()
        self._extra.setdefault("probs", {})[depth] = np.asarray(probs, dtype=np.float64)

    def update(self, trace: Trace) -> dict[str, float]:
        raise NotImplementedError

    def pop_extra(self) -> dict[str, Any]:
        extra, self._extra = self._extra, {}
        return extra

    def returns(self, trace: Trace) -> np.ndarray:
        return compute_returns(trace.rewards, trace.r_final, self.gamma)

    # -- persistence ----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        torch.save({"class": type(self).__name__, "n_tasks": self.n_tasks, "depth_actions": self.depth_actions,
                    "state_dims": self.state_dims, "kwargs": self.kwargs, "state": self.get_state()}, path)

    @classmethod
    def load(cls, path: str | Path, env: Any = None) -> Router:
        data = torch.load(path, weights_only=False)
        klass = POLICIES_BY_CLASS[data["class"]]
        router = klass(data["n_tasks"], data["depth_actions"], data["state_dims"], env=env, **data["kwargs"])
        router.set_state(data["state"])
        return router

    # -- SB3-like surface on the routing MDP ----------------------------------------------------
    def _obs_tensors(self, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        d = int(obs["depth"])
        v = torch.as_tensor(np.asarray(obs["v"], dtype=np.float32)[: self.state_dims[d]]).unsqueeze(0)
        return v, torch.tensor([int(obs["task"])]), d

    def predict(self, obs: dict[str, Any], state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Action for one routing-MDP observation (SB3 signature; ``state`` is unused)."""
        v, t, d = self._obs_tensors(obs)
        return np.asarray(int(self.act(v, t, d, deterministic)[0])), None

    def learn(self, total_timesteps: int, env: Any = None) -> Router:
        """Interact with the routing MDP for ``total_timesteps`` steps, updating after every episode."""
        env = env or self.env
        if env is None:
            raise ValueError("learn() needs an env: pass one to the constructor or to learn()")
        steps = 0
        while steps < total_timesteps:
            obs, _ = env.reset()
            states, actions, rewards, done, info = [], [], [], False, {}
            while not done:
                v, t, d = self._obs_tensors(obs)
                a = int(self.act(v, t, d, deterministic=False)[0])
                if getattr(env.unwrapped, "usage", None) is not None and env.unwrapped.usage.mode == "probability":
                    env.unwrapped.set_action_probs(self._extra["probs"][d][0])
                states.append(v)
                obs, _, done, _, info = env.step(a)
                actions.append(info["block"])
                rewards.append(info["r_collab"])
                steps += 1
            self.update(Trace(states, t, np.array([actions]), np.array([rewards]), np.array([info["r_final"]]),
                              self.pop_extra()))
        return self

    def evaluate(self, env: Any = None, n_episodes: int = 200) -> dict[str, float]:
        """Per-task accuracy of greedy routes on ``n_episodes`` random training samples of the env."""
        env = env or self.env
        hits = np.zeros(self.n_tasks)
        seen = np.zeros(self.n_tasks)
        for _ in range(n_episodes):
            obs, _ = env.reset()
            t, done = int(obs["task"]), False
            while not done:
                obs, _, done, _, info = env.step(self.predict(obs)[0])
            seen[t] += 1
            hits[t] += info["r_final"] > 0
        return {f"task_{i}": float(hits[i] / seen[i]) for i in range(self.n_tasks) if seen[i]}


def _epsilon_greedy_probs(greedy: np.ndarray, n_actions: int, epsilon: float) -> np.ndarray:
    """(B, n_actions) probabilities of epsilon-greedy around ``greedy`` (B,)."""
    p = np.full((len(greedy), n_actions), epsilon / n_actions)
    p[np.arange(len(greedy)), greedy] += 1.0 - epsilon
    return p


def _valid_mask(depth_actions: list[int], max_actions: int) -> np.ndarray:
    mask = np.zeros((len(depth_actions), max_actions), dtype=bool)
    for d, n in enumerate(depth_actions):
        mask[d, :n] = True
    return mask


def _batch_means(task: np.ndarray, action: np.ndarray, values: np.ndarray, n_tasks: int, n_actions: int):
    """Per (task, action) mean of ``values`` and the count of samples behind it."""
    sums = np.zeros((n_tasks, n_actions))
    cnt = np.zeros((n_tasks, n_actions))
    np.add.at(sums, (task, action), values)
    np.add.at(cnt, (task, action), 1.0)
    return np.divide(sums, cnt, out=np.zeros_like(sums), where=cnt > 0), cnt


class WPLRouter(Router):
    """Weighted Policy Learner (Abdallah & Lesser 2006), one tabular agent per task, state (t, depth).

    Per step ``i`` of a trace of task ``t``: ``R_hat <- (1-lr) R_hat + lr R_i``; ``Delta = R_i - R_hat``;
    ``Delta`` is then scaled by a probability that depends on its sign (``form``, below);
    ``pi(a) += lr * Delta``; ``pi <- clip(pi, 0, 1) / sum``; then the probability floor ``min_prob``
    keeps every action alive. Samples at training time, argmax at evaluation.

    ``form`` says how the sign decides the scale; the paper states it both ways:

    * ``"printed"`` (default): Algorithm 3 lines 9-12 and section 3.1.2, "scaling the gradient ...
      according the probability of taking that action pi(a) (if the gradient is positive) or 1 - pi(a)
      (if the gradient is negative)": ``Delta *= 1 - pi(a)`` if ``Delta < 0`` else ``Delta *= pi(a)``.
    * ``"original"``: the paper's appendix 7.4 and Abdallah & Lesser: ``Delta *= pi(a)`` if
      ``Delta < 0`` else ``Delta *= 1 - pi(a)``.

    Why it matters: while the routed network predicts the prior, the reward does not depend on the
    route and ``Delta`` is zero-mean noise. Under ``"original"`` a rare action gains more from good
    luck than it loses from bad luck, so the uniform policy is a stable fixed point and the router never
    commits (routing stays at 90% on mnist-mtl). Under ``"printed"`` the likely action gains more, so
    uniform is unstable and every agent commits to a route early; the blocks on that route then train
    for its task. The price: a committed action barely moves on bad news (``1 - pi`` is small), so two
    tasks can lock onto one route (see the route-collision metrics).

    ``baseline`` says what ``R_hat`` averages. ``"state"`` (default): Algorithm 3 writes ``R_hat_i``,
    one average per step i of the trace, i.e. per state (t, depth), shared by its actions, so ``Delta``
    is an advantage (original WPL also compares an action's value with the policy's value).
    ``"action"`` (the spec's literal ``R_hat[t, i, a]``; the paper's text says "the historical average
    return R_hat_i for each action a_i") keeps one average per action; then ``E[Delta] -> 0`` for every
    action once its average has caught up, so the policy stops preferring the better block. Both give
    the same numbers on a fresh table's first update.

    ``own_prior`` (default 0: the paper's uniform start) is an optional remedy for route collisions:
    task ``t``'s agent starts at the first routed depth from ``(1 - own_prior) * uniform + own_prior *
    onehot(t mod n_blocks)`` instead of uniform. Why: under ``"printed"`` the uniform policy is unstable,
    so where an agent commits is decided by the early noise (and, with ``rho > 0``, by the pooled
    collaboration reward, which pulls agents to the same blocks); two tasks that draw the same block
    at every depth share a whole route, and the network, which sees the task only through the route,
    cannot tell them apart. A small bias towards a task's own first block breaks that symmetry, so
    whole routes stay distinct while the deeper depths remain free to share blocks. It is a prior,
    not a constraint: the update moves it like any other policy.
    """

    name = "wpl"

    def __init__(self, n_tasks, depth_actions=None, state_dims=None, *, lr: float = 0.1, min_prob: float = 1e-3,
                 baseline: str = "state", form: str = "printed", own_prior: float = 0.0, **kw):
        super().__init__(n_tasks, depth_actions, state_dims, **kw)
        depth_actions, state_dims = self.depth_actions, self.state_dims
        n_tasks = self.n_tasks
        if baseline not in ("state", "action"):
            raise ValueError(f"unknown WPL baseline '{baseline}'; valid choices: action, state")
        WPL_FORMS.check(form)
        check_own_prior(own_prior)
        self.lr, self.min_prob, self.baseline, self.form, self.own_prior = lr, min_prob, baseline, form, own_prior
        self.kwargs.update(lr=lr, min_prob=min_prob, baseline=baseline, form=form, own_prior=own_prior)
        self.mask = _valid_mask(self.depth_actions, self.max_actions)
        self.pi = np.where(self.mask, 1.0, 0.0)[None].repeat(n_tasks, 0)
        self.pi /= self.pi.sum(2, keepdims=True)
        if own_prior > 0:  # task t's first-depth policy leans towards block t (mod the number of blocks)
            n0 = self.depth_actions[0]
            own = np.eye(n0)[np.arange(n_tasks) % n0]
            self.pi[:, 0, :n0] = (1.0 - own_prior) * self.pi[:, 0, :n0] + own_prior * own
        self.r_hat = np.zeros((n_tasks, self.n_depths, self.max_actions))

    def _act(self, v, task, depth, deterministic=False):
        p = self.pi[task.cpu().numpy(), depth]  # (B, A)
        self._record_probs(depth, p[:, : self.depth_actions[depth]])
        if deterministic:
            return torch.from_numpy(p.argmax(1))
        u = self.rng.random((p.shape[0], 1))
        a = (p.cumsum(1) < u).sum(1)
        return torch.from_numpy(np.minimum(a, self.depth_actions[depth] - 1))

    def project(self, p: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``clip(p, 0, 1) / sum`` over valid actions, then the floor ``min_prob`` (renormalised)."""
        p = np.where(valid, np.clip(p, 0.0, 1.0), 0.0)
        s = p.sum(-1, keepdims=True)
        p = np.where(s > 0, p / np.where(s > 0, s, 1.0), valid / valid.sum(-1, keepdims=True))
        p = np.where(valid, np.maximum(p, self.min_prob), 0.0)
        return p / p.sum(-1, keepdims=True)

    def update(self, trace: Trace) -> dict[str, float]:
        R = self.returns(trace)
        task = trace.task.cpu().numpy()
        for d in range(self.n_depths):
            rbar, cnt = _batch_means(task, trace.actions[:, d], R[:, d], self.n_tasks, self.max_actions)
            seen = cnt > 0
            if self.baseline == "action":
                r_hat = np.where(seen, (1 - self.lr) * self.r_hat[:, d] + self.lr * rbar, self.r_hat[:, d])
            else:  # one average per state (t, d), shared by its actions
                sbar, scnt = _batch_means(task, np.zeros_like(task), R[:, d], self.n_tasks, 1)
                r_hat = np.where(scnt > 0, (1 - self.lr) * self.r_hat[:, d] + self.lr * sbar, self.r_hat[:, d])
            self.r_hat[:, d] = r_hat
            pi = self.pi[:, d]
            delta = rbar - r_hat
            if self.form == "printed":  # Algorithm 3: negative scaled by 1 - pi, positive by pi
                delta = np.where(delta < 0, delta * (1.0 - pi), delta * pi)
            else:  # appendix 7.4 / Abdallah & Lesser: negative scaled by pi, positive by 1 - pi
                delta = np.where(delta < 0, delta * pi, delta * (1.0 - pi))
            new = pi + self.lr * np.where(seen, delta, 0.0)
            rows = seen.any(1)
            self.pi[rows, d] = self.project(new[rows], self.mask[d][None].repeat(rows.sum(), 0))
        return {"mean_return": float(R[:, 0].mean())}

    def get_state(self):
        return {"pi": self.pi, "r_hat": self.r_hat}

    def set_state(self, state):
        self.pi, self.r_hat = np.asarray(state["pi"]), np.asarray(state["r_hat"])


class TabularQRouter(Router):
    """Tabular Q-learning, one agent per task, state (t, depth), epsilon-greedy (epsilon 0.1).

    TD target ``r_i + gamma * max_a' Q[t, i+1, a']`` and ``r_n + r_final`` at the last depth (the
    immediate reward is added, not subtracted).
    """

    name = "q-tabular"

    def __init__(self, n_tasks, depth_actions=None, state_dims=None, *, lr: float = 0.1, epsilon: float = 0.1, **kw):
        super().__init__(n_tasks, depth_actions, state_dims, **kw)
        depth_actions, state_dims = self.depth_actions, self.state_dims
        n_tasks = self.n_tasks
        self.lr, self.epsilon = lr, epsilon
        self.kwargs.update(lr=lr, epsilon=epsilon)
        self.mask = _valid_mask(self.depth_actions, self.max_actions)
        self.q = np.zeros((n_tasks, self.n_depths, self.max_actions))

    def _greedy(self, q: np.ndarray, depth: int) -> np.ndarray:
        q = np.where(self.mask[depth], q, -np.inf) + 1e-9 * self.rng.random(q.shape)  # random tie-break
        return q.argmax(1)

    def _act(self, v, task, depth, deterministic=False):
        q = self.q[task.cpu().numpy(), depth]
        if deterministic:
            a = np.where(self.mask[depth], q, -np.inf).argmax(1)
            self._record_probs(depth, np.eye(self.depth_actions[depth])[a])
            return torch.from_numpy(a)
        a = self._greedy(q, depth)
        self._record_probs(depth, _epsilon_greedy_probs(a, self.depth_actions[depth], self.epsilon))
        explore = self.rng.random(len(a)) < self.epsilon
        a = np.where(explore, self.rng.integers(0, self.depth_actions[depth], len(a)), a)
        return torch.from_numpy(a)

    def update(self, trace: Trace) -> dict[str, float]:
        task = trace.task.cpu().numpy()
        td = []
        for d in range(self.n_depths):
            a = trace.actions[:, d]
            if d == self.n_depths - 1:
                target = trace.rewards[:, d] + trace.r_final
            else:
                nxt = np.where(self.mask[d + 1], self.q[task, d + 1], -np.inf).max(1)
                target = trace.rewards[:, d] + self.gamma * nxt
            tbar, cnt = _batch_means(task, a, target, self.n_tasks, self.max_actions)
            seen = cnt > 0
            err = np.where(seen, tbar - self.q[:, d], 0.0)
            self.q[:, d] += self.lr * err
            td.append(np.abs(err[seen]).mean())
        return {"td_error": float(np.mean(td))}

    def get_state(self):
        return {"q": self.q}

    def set_state(self, state):
        self.q = np.asarray(state["q"])


class _MLPBank(nn.Module):
    """``n_agents x n_depths`` 2-layer MLPs (hidden 64) of concat(v, onehot(t)); rows routed per agent."""

    def __init__(self, n_agents: int, n_tasks: int, state_dims: list[int], outs: list[int], hidden: int = 64):
        super().__init__()
        self.n_tasks, self.outs = n_tasks, outs
        self.nets = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Linear(s + n_tasks, hidden), nn.ReLU(), nn.Linear(hidden, o))
                          for s, o in zip(state_dims, outs, strict=True))
            for _ in range(n_agents)
        )

    def forward(self, v: torch.Tensor, task: torch.Tensor, agent: torch.Tensor, depth: int) -> torch.Tensor:
        inp = torch.cat([v, nn.functional.one_hot(task, self.n_tasks).to(v.dtype)], 1)
        out = v.new_zeros((v.shape[0], self.outs[depth]))
        for g in torch.unique(agent).tolist():
            rows = torch.nonzero(agent == g, as_tuple=True)[0]
            out = out.index_copy(0, rows, self.nets[g][depth](inp.index_select(0, rows)))
        return out


class ApproxQRouter(Router):
    """Approximate Q-learning: one MLP per task and depth, l2 TD loss, epsilon-greedy (epsilon 0.1)."""

    name = "q-approx"

    def __init__(self, n_tasks, depth_actions=None, state_dims=None, *, lr: float = 1e-3, epsilon: float = 0.1, **kw):
        super().__init__(n_tasks, depth_actions, state_dims, **kw)
        depth_actions, state_dims = self.depth_actions, self.state_dims
        n_tasks = self.n_tasks
        self.lr, self.epsilon = lr, epsilon
        self.kwargs.update(lr=lr, epsilon=epsilon)
        with seeded(self.seed):
            self.net = _MLPBank(n_tasks, n_tasks, self.state_dims, self.depth_actions).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)

    def _act(self, v, task, depth, deterministic=False):
        v, task = v.to(self.device), task.to(self.device)
        with torch.no_grad():
            a = self.net(v, task, task, depth).argmax(1)
        n = self.depth_actions[depth]
        if deterministic:
            self._record_probs(depth, np.eye(n)[a.cpu().numpy()])
            return a
        self._record_probs(depth, _epsilon_greedy_probs(a.cpu().numpy(), n, self.epsilon))
        explore = torch.rand(len(a), device=self.device) < self.epsilon
        rand = torch.randint(0, n, (len(a),), device=self.device)
        return torch.where(explore, rand, a)

    def update(self, trace: Trace) -> dict[str, float]:
        t = trace.task.to(self.device)
        states = [s.to(self.device) for s in trace.states]
        dev: dict[str, Any] = {"device": self.device, "dtype": torch.float32}
        loss = torch.zeros((), **dev)
        for d in range(self.n_depths):
            chosen = torch.as_tensor(trace.actions[:, d], device=self.device).long()[:, None]
            q = self.net(states[d], t, t, d).gather(1, chosen)[:, 0]
            r = torch.as_tensor(trace.rewards[:, d], **dev)
            if d == self.n_depths - 1:
                target = r + torch.as_tensor(trace.r_final, **dev)
            else:
                with torch.no_grad():
                    target = r + self.gamma * self.net(states[d + 1], t, t, d + 1).max(1).values
            loss = loss + nn.functional.mse_loss(q, target)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"td_loss": loss.item()}

    def get_state(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def set_state(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


class ReinforceRouter(Router):
    """REINFORCE with one MLP policy per depth and agent; input concat(v, onehot(t)).

    ``agents``: ``"per-task"`` (one agent per task, the paper's multi-agent form), ``"single"`` (one
    agent for all tasks) or ``"dispatched"`` (``n_tasks`` agents plus a dispatcher MLP that picks the
    agent of each sample from concat(v, onehot(t)) at depth 0, itself trained by REINFORCE on R_0).
    The baseline is a running mean of the return per (task, depth), to lower variance.
    """

    name = "reinforce"

    def __init__(self, n_tasks, depth_actions=None, state_dims=None, *, lr: float = 1e-3, agents: str = "per-task",
                 baseline_momentum: float = 0.9, **kw):
        super().__init__(n_tasks, depth_actions, state_dims, **kw)
        depth_actions, state_dims = self.depth_actions, self.state_dims
        n_tasks = self.n_tasks
        if agents not in ("per-task", "single", "dispatched"):
            raise ValueError(f"unknown agents '{agents}'; valid choices: dispatched, per-task, single")
        self.lr, self.agents, self.momentum = lr, agents, baseline_momentum
        self.kwargs.update(lr=lr, agents=agents, baseline_momentum=baseline_momentum)
        n_agents = 1 if agents == "single" else n_tasks
        with seeded(self.seed):
            self.net = _MLPBank(n_agents, n_tasks, self.state_dims, self.depth_actions).to(self.device)
            if agents == "dispatched":
                self.dispatcher = _MLPBank(1, n_tasks, self.state_dims[:1], [n_tasks]).to(self.device)
        params = list(self.net.parameters())
        if agents == "dispatched":
            params += list(self.dispatcher.parameters())
        self.opt = torch.optim.Adam(params, lr=lr)
        self.baseline = np.zeros((n_tasks, self.n_depths + 1))
        self._agent: torch.Tensor | None = None

    def _agent_of(self, v, task, depth, deterministic):
        if self.agents == "per-task":
            return task
        if self.agents == "single":
            return torch.zeros_like(task)
        if depth == 0 or self._agent is None or len(self._agent) != len(task):
            with torch.no_grad():
                logits = self.dispatcher(v, task, torch.zeros_like(task), 0)
            agent = logits.argmax(1) if deterministic else torch.multinomial(torch.softmax(logits, 1), 1)[:, 0]
            self._agent = agent
            self._extra["agent"] = agent
        return self._agent

    def _act(self, v, task, depth, deterministic=False):
        v, task = v.to(self.device), task.to(self.device)
        agent = self._agent_of(v, task, depth, deterministic)
        with torch.no_grad():
            probs = torch.softmax(self.net(v, task, agent, depth), 1)
        self._record_probs(depth, probs)
        if deterministic:
            return probs.argmax(1)
        return torch.multinomial(probs, 1)[:, 0]

    def update(self, trace: Trace) -> dict[str, float]:
        R = self.returns(trace)
        task = trace.task.to(self.device)
        tn = trace.task.cpu().numpy()
        states = [s.to(self.device) for s in trace.states]
        agent = trace.extra.get("agent", task if self.agents == "per-task" else torch.zeros_like(task)).to(self.device)
        dev: dict[str, Any] = {"device": self.device, "dtype": torch.float32}
        loss = torch.zeros((), **dev)
        for d in range(self.n_depths):
            adv = torch.as_tensor(R[:, d] - self.baseline[tn, d], **dev)
            logp = torch.log_softmax(self.net(states[d], task, agent, d), 1)
            chosen = logp.gather(1, torch.as_tensor(trace.actions[:, d], device=self.device).long()[:, None])[:, 0]
            loss = loss - (adv * chosen).mean()
        if self.agents == "dispatched":
            d = self.n_depths  # baseline column of the dispatcher
            adv = torch.as_tensor(R[:, 0] - self.baseline[tn, d], **dev)
            logp = torch.log_softmax(self.dispatcher(states[0], task, torch.zeros_like(task), 0), 1)
            loss = loss - (adv * logp.gather(1, agent[:, None])[:, 0]).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        for d in range(self.n_depths + 1):
            rbar, cnt = _batch_means(tn, np.zeros_like(tn), R[:, min(d, self.n_depths - 1)], self.n_tasks, 1)
            seen = cnt[:, 0] > 0
            self.baseline[seen, d] = self.momentum * self.baseline[seen, d] + (1 - self.momentum) * rbar[seen, 0]
        self._agent = None
        return {"pg_loss": loss.item()}

    def get_state(self):
        state = {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "baseline": self.baseline}
        if self.agents == "dispatched":
            state["dispatcher"] = self.dispatcher.state_dict()
        return state

    def set_state(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.baseline = np.asarray(state["baseline"])
        if "dispatcher" in state:
            self.dispatcher.load_state_dict(state["dispatcher"])


POLICIES_BY_CLASS = {c.__name__: c for c in (WPLRouter, TabularQRouter, ApproxQRouter, ReinforceRouter)}

#: Algorithm name (one of :data:`moerl.routing.config.ROUTING_POLICIES`) -> (router class, extra kwargs).
ROUTER_ALGOS: dict[str, tuple[type[Router], dict[str, Any]]] = {
    "wpl": (WPLRouter, {}),
    "q-tabular": (TabularQRouter, {}),
    "q-approx": (ApproxQRouter, {}),
    "reinforce": (ReinforceRouter, {"agents": "per-task"}),
    "reinforce-single": (ReinforceRouter, {"agents": "single"}),
    "dispatched-reinforce": (ReinforceRouter, {"agents": "dispatched"}),
}


if tuple(ROUTER_ALGOS) != ROUTING_POLICIES.names:  # the registry is the one list of names
    raise ImportError(f"ROUTER_ALGOS {list(ROUTER_ALGOS)} does not match the ROUTING_POLICIES registry {list(ROUTING_POLICIES.names)}")


def make_router(algo: str, n_tasks: int, depth_actions: list[int], state_dims: list[int], **kwargs: Any) -> Router:
    """Build a router by name (see :data:`moerl.routing.config.ROUTING_POLICIES`); ConfigError for an unknown one."""
    cls, extra = ROUTER_ALGOS[ROUTING_POLICIES.check(algo)]
    return cls(n_tasks, depth_actions, state_dims, **{**extra, **kwargs})
