"""Routed-only expert compute against today's dense compute, for the batched engine's MoE layer shapes.

Today the ``hardcoded`` and ``topk`` routers (:mod:`moerl.nn.gating`) run every expert on every token (one
``bmm`` over members x experts) and then weight the outputs by the gates, zero off the chosen experts: E / k
times the expert FLOPs a token needs. This measures whether computing each expert only on the tokens routed
to it pays on this CPU, at the shapes the engine runs: ``S`` members (``--members``), ``E`` experts, width
128, and the three passes an engine makes through a MoE layer (``--passes``): ``train``, the online network's
forward + backward of an update (tokens per member = the minibatch, 128), ``target``, the target network's
forward of an update (128 tokens, no gradient), and ``act``, the acting forward (greedy actions: 1 token per
member, no gradient).

Compared side by side in one process on one torch thread, per case:

* ``dense``: the router module itself (``HardcodedRouter`` / ``TopKRouter`` of a seed-stacked
  ``BatchedQNetwork``, train mode): gates, all experts on all tokens, combine, exactly as the engine does it;
* ``grouped``: the same gates, then the (member, expert, token) assignments sorted by (member, expert) and
  every expert layer as one ``torch.nn.functional.grouped_mm`` over the ``S * E`` groups (no padding, no
  weight copy, static shapes: ``S * T * k`` rows whatever the routing), per-row bias, and the rows put back
  in token order and weighted by the gates;
* ``padded``: the classic capacity layout: each (member, expert) segment padded to the largest one's token
  count ``C`` (read on the host) and every layer one ``bmm`` over ``S * E`` matrices of ``C`` rows.

Routing distributions: ``uniform`` (each token's expert uniform at random for ``hardcoded``; centred random
tokens for ``topk``, whose softmax then spreads evenly) and ``skewed``, as in CRL where one task's replay
sends nearly all of a member's tokens to one expert: for ``hardcoded`` a ``--skew`` share of each member's
tokens has one task (member-dependent), for ``topk`` the tokens are shifted along the router column of one
expert per member. The measured share of the most used expert per member is reported (``top share``).

Before timing, every case checks (assert) that both routed variants give the dense outputs and the
gradients of the tokens, expert weights and biases and (``topk``) router weights within float32 tolerance
(rtol 1e-4, atol 1e-5). Timing: ``--reps`` repetitions, the variants alternating in order, each repetition
a slice of calls of about ``--slice`` seconds; the median ms per call is reported, and dense / variant
(> 1: routed-only is faster). Shapes (``--shapes``): ``middle`` (the MoE hidden layer, one 128 -> 128 linear
+ ReLU per expert) and ``big`` (each expert a whole Q-network, 8 -> 128 -> 128 -> 2, cartpole's sizes).

    python benchmarks/routed_experts.py [--members 8,64,256] [--shapes middle,big]
        [--routers hardcoded,topk1,topk2] [--passes train,target,act] [--experts 4] [--batch 128]
        [--skew 0.97] [--reps 5] [--slice 0.15] [--out /tmp/routed_experts.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from moerl.core.cpu_allocator import keep_freed_memory
from moerl.nn.experts import BatchedLinear, ExpertMLP
from moerl.nn.gating import HardcodedRouter, TopKRouter
from moerl.rl.nets.batched import BatchedQNetwork
from moerl.rl.nets.qnetwork import QNetworkConfig

IN_FEATURES, N_ACTIONS = 8, 2  # cartpole-crl: 4 observation values + 4 task one-hots; 2 actions
ROUTERS = {"hardcoded": ("hardcoded", 1), "topk1": ("topk", 1), "topk2": ("topk", 2)}
#: The passes an engine runs through a MoE layer: (tokens per member: the minibatch or 1, with gradient).
PASSES = {"train": ("batch", True), "target": ("batch", False), "act": (1, False)}
PASS_NAMES = {"train": "train fwd+bwd", "target": "target fwd", "act": "act fwd"}
VARIANTS = ("dense", "grouped", "padded")


# --- the router's MoE layer, built as the engine builds it ------------------------------------------------

def moe_router(shape: str, router: str, k: int, experts: int, hidden: int, members: int) -> nn.Module:
    """The seed-stacked router module (with its experts) of a ``BatchedQNetwork`` of members 0..S-1."""
    arch = {"middle": "middle", "big": "big"}[shape]
    cfg = QNetworkConfig(arch=arch, router=router, topk=k, experts=experts, hidden=hidden)
    net = BatchedQNetwork.from_seeds(IN_FEATURES, N_ACTIONS, cfg, list(range(members))).train(True)
    block = net.net.layers[1 if shape == "middle" else 0]
    return block.router


def routing_inputs(router: nn.Module, members: int, tokens: int, dist: str, skew: float,
                   g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tokens ``(S, T, 1, d)`` and task ids ``(S, T)`` (hardcoded) giving the ``dist`` routing."""
    d = router.experts.sizes[0]
    e = router.num_experts
    x = torch.randn(members, tokens, 1, d, generator=g)
    dominant = torch.arange(members) % e
    if isinstance(router, HardcodedRouter):
        task = torch.randint(0, e, (members, tokens), generator=g)
        if dist == "skewed":
            keep = torch.rand(members, tokens, generator=g) < skew
            task = torch.where(keep, dominant[:, None], task)
        return x, task
    if dist == "skewed":  # shift each member's tokens along its dominant expert's router column
        w = router.weight.detach()[torch.arange(members), :, dominant]  # (S, d)
        x = x + 8.0 * (w / w.pow(2).sum(-1, keepdim=True))[:, None, None, :]
    return x, None


def assignments(router: nn.Module, x: torch.Tensor, task: torch.Tensor | None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each token's chosen experts ``(S, T, k)`` and gates ``(S, T, k)`` (None: weight 1), as the router picks."""
    s, b, m, d = x.shape
    if isinstance(router, HardcodedRouter):
        assert task is not None
        return task.long().repeat_interleave(m, dim=-1)[..., None], None
    assert isinstance(router, TopKRouter)
    probs = torch.softmax(x.reshape(s, b * m, d) @ router.weight, dim=-1)  # TopKRouter.gates without noise
    top_vals, top_idx = probs.topk(router.k, dim=-1)
    return top_idx, top_vals


def layer_params(experts: ExpertMLP) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    out = []
    for layer in experts.layers:
        assert isinstance(layer, BatchedLinear) and layer.seed_stacked
        out.append((layer.weight, layer.bias))
    return out


def _relu_after(experts: ExpertMLP, i: int) -> bool:
    return i < len(experts.layers) - 1 or experts.activate_output


# --- the variants ----------------------------------------------------------------------------------------

def dense(router: nn.Module, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
    """Today's code path: the router module's forward (no record)."""
    return router(x, task, None, "moe")


def _grouped_linear(h: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """``grouped_mm`` of rows ``h`` (N, in) with weights ``w`` (G, in, out); an ``out`` whose rows are not a
    multiple of 16 bytes (the Q-values' 2) is zero-padded for the kernel and sliced back."""
    out = w.shape[-1]
    pad = -out % 4
    if pad:
        return F.grouped_mm(h, F.pad(w, (0, pad)), offs=offs)[:, :out]
    return F.grouped_mm(h, w, offs=offs)


def grouped(router: nn.Module, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
    """Each expert on its own tokens only: rows sorted by (member, expert), one grouped GEMM per layer."""
    s, b, m, d = x.shape
    t = b * m
    experts: ExpertMLP = router.experts
    e = experts.num_experts
    idx, gates = assignments(router, x, task)
    k = idx.shape[-1]
    group = (torch.arange(s)[:, None, None] * e + idx).reshape(-1)  # (S*T*k,), token-major then k
    order = torch.argsort(group, stable=True)
    sorted_group = group.index_select(0, order)
    offs = torch.bincount(group, minlength=s * e).cumsum(0).to(torch.int32)
    h = x.reshape(s * t, d).index_select(0, order // k)
    for i, (w, bias) in enumerate(layer_params(experts)):
        h = _grouped_linear(h, w.flatten(0, 1), offs)
        if bias is not None:
            h = h + bias.flatten(0, 2).index_select(0, sorted_group)  # bias (S, E, 1, o) -> (S*E, o) per row
        if _relu_after(experts, i):
            h = torch.relu(h)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
    y = h.index_select(0, inverse)  # back to token-major order
    if gates is not None:
        y = y * gates.reshape(-1, 1)
    return y.view(s, t, k, -1).sum(2).reshape(s, b, m, -1)


def padded(router: nn.Module, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
    """Each (member, expert) segment padded to the largest segment's length ``C``: one ``bmm`` of ``S * E``
    matrices of ``C`` rows per layer (``C`` read on the host)."""
    s, b, m, d = x.shape
    t = b * m
    experts: ExpertMLP = router.experts
    e = experts.num_experts
    idx, gates = assignments(router, x, task)
    k = idx.shape[-1]
    group = (torch.arange(s)[:, None, None] * e + idx).reshape(-1)
    counts = torch.bincount(group, minlength=s * e)
    cap = int(counts.max())
    order = torch.argsort(group, stable=True)
    sorted_group = group.index_select(0, order)
    start = counts.cumsum(0) - counts
    slot_sorted = sorted_group * cap + torch.arange(order.numel()) - start.index_select(0, sorted_group)
    slot = torch.empty_like(slot_sorted).scatter_(0, order, slot_sorted)  # each assignment's padded row
    source = torch.full((s * e * cap,), s * t, dtype=torch.long).scatter_(0, slot, torch.arange(s * t * k) // k)
    tokens = torch.cat([x.reshape(s * t, d), x.new_zeros(1, d)])  # a zero row for the padding
    h = tokens.index_select(0, source).view(s * e, cap, d)
    for i, (w, bias) in enumerate(layer_params(experts)):
        h = torch.bmm(h, w.flatten(0, 1))
        if bias is not None:
            h = h + bias.flatten(0, 1)
        if _relu_after(experts, i):
            h = torch.relu(h)
    y = h.reshape(s * e * cap, -1).index_select(0, slot)
    if gates is not None:
        y = y * gates.reshape(-1, 1)
    return y.view(s, t, k, -1).sum(2).reshape(s, b, m, -1)


FUNCTIONS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "dense": dense, "grouped": grouped, "padded": padded}


# --- checks and timing -----------------------------------------------------------------------------------

def outputs_and_grads(fn: Callable, router: nn.Module, x: torch.Tensor, task: torch.Tensor | None,
                      gy: torch.Tensor) -> list[torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    router.zero_grad(set_to_none=True)
    y = fn(router, xr, task)
    (y * gy).sum().backward()
    params = [p.grad if p.grad is not None else torch.zeros_like(p) for p in router.parameters()]
    return [y.detach(), xr.grad, *params]


def check_equal(router: nn.Module, x: torch.Tensor, task: torch.Tensor | None, gy: torch.Tensor) -> None:
    ref = outputs_and_grads(dense, router, x, task, gy)
    names = ["output", "grad tokens", *(f"grad {n}" for n, _ in router.named_parameters())]
    for variant in VARIANTS[1:]:
        got = outputs_and_grads(FUNCTIONS[variant], router, x, task, gy)
        for name, a, b in zip(names, ref, got, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, v=variant, n=name: f"{v} {n}: {m}")
    router.zero_grad(set_to_none=True)


def step_fn(variant: str, router: nn.Module, x: torch.Tensor, task: torch.Tensor | None,
            gy: torch.Tensor, train: bool) -> Callable[[], None]:
    fn = FUNCTIONS[variant]
    if not train:
        def act() -> None:
            with torch.no_grad():
                fn(router, x, task)
        return act
    xr = x.clone().requires_grad_(True)

    def update() -> None:
        router.zero_grad(set_to_none=True)
        xr.grad = None
        (fn(router, xr, task) * gy).sum().backward()
    return update


def time_side_by_side(steps: dict[str, Callable[[], None]], reps: int, slice_s: float) -> dict[str, float]:
    """Median seconds per call of each step, alternating order over ``reps`` slices of ~``slice_s`` each."""
    calls = {}
    for name, step in steps.items():
        step()
        start = time.perf_counter()
        step()
        calls[name] = max(1, round(slice_s / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(reps):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            for _ in range(calls[name]):
                steps[name]()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def top_share(router: nn.Module, x: torch.Tensor, task: torch.Tensor | None, experts: int) -> float:
    """Mean over members of the share of assignments that go to the member's most used expert."""
    with torch.no_grad():
        idx, _ = assignments(router, x, task)
    counts = F.one_hot(idx.flatten(1), experts).sum(1).float()  # (S, E)
    return float((counts.max(1).values / counts.sum(1)).mean())


def measure(shape: str, members: int, rname: str, dist: str, pass_: str, args: argparse.Namespace) -> dict:
    router_kind, k = ROUTERS[rname]
    router = moe_router(shape, router_kind, k, args.experts, args.hidden, members)
    size, train = PASSES[pass_]
    tokens = args.batch if size == "batch" else int(size)
    g = torch.Generator().manual_seed(members * 1000 + tokens)
    x, task = routing_inputs(router, members, tokens, dist, args.skew, g)
    with torch.no_grad():
        out_features = dense(router, x, task).shape[-1]
    gy = torch.randn(members, tokens, 1, out_features, generator=g)
    check_equal(router, x, task, gy)
    steps = {v: step_fn(v, router, x, task, gy, train) for v in VARIANTS}
    sec = time_side_by_side(steps, args.reps, args.slice)
    ms = {v: round(s * 1e3, 3) for v, s in sec.items()}
    return {"shape": shape, "members": members, "router": rname, "dist": dist,
            "pass": PASS_NAMES[pass_], "tokens": tokens,
            "top_share": round(top_share(router, x, task, args.experts), 3), "ms": ms,
            "speedup": {v: round(sec["dense"] / sec[v], 2) for v in VARIANTS[1:]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="8,64,256")
    parser.add_argument("--shapes", default="middle,big")
    parser.add_argument("--routers", default="hardcoded,topk1,topk2")
    parser.add_argument("--passes", default="train,target,act")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--skew", type=float, default=0.97, help="skewed: share of a member's tokens on one task")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--slice", type=float, default=0.15, help="seconds per timed slice")
    parser.add_argument("--out", default="/tmp/routed_experts.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as the engine does on CPU
    results = []
    print("| shape | members | pass | router | tokens dist (top share) | dense ms | grouped ms | padded ms "
          "| dense/grouped | dense/padded |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for shape in args.shapes.split(","):
        for members in map(int, args.members.split(",")):
            for pass_ in args.passes.split(","):
                for rname in args.routers.split(","):
                    for dist in ("uniform", "skewed"):
                        r = measure(shape, members, rname, dist, pass_, args)
                        results.append(r)
                        print(f"| {shape} | {members} | {r['pass']} | {r['router']} | {dist} ({r['top_share']}) "
                              f"| {r['ms']['dense']} | {r['ms']['grouped']} | {r['ms']['padded']} "
                              f"| {r['speedup']['grouped']} | {r['speedup']['padded']} |", flush=True)
                        with open(args.out, "w") as f:
                            json.dump({"machine": platform.processor() or platform.machine(),
                                       "torch": torch.__version__, "threads": 1, "experts": args.experts,
                                       "hidden": args.hidden, "batch": args.batch, "skew": args.skew,
                                       "reps": args.reps, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
