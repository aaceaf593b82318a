"""Does a bfloat16 update pay on this CPU? One BatchedDQN update, float32 against two bf16 paths, side by side.

The CPU has AMX (bf16 tiles): a contiguous bf16 ``bmm`` of the engine's shapes runs several times faster than
float32 (the ``raw bmm`` rows measure it, ``(S*E, 128, 128) x (S*E, 128, 128)``). Whether a whole update
gains depends on what else it spends time on (casts, elementwise ops, sampling, clipping, Adam). Per
architecture (``--archs``, default ``dense`` and ``big:softmoe``) at ``--members`` members (64), three
``BatchedDQN`` engines of cartpole-crl (``learning_starts=100``, the rest the defaults) are built and trained
for ``--warmup`` env steps (300), identically (they hold the same state then), and differ only in the
update's forward and loss (subclasses here; nothing in ``moerl`` changes):

* ``fp32``: today's update, ``agent.train(1)``;
* ``autocast``: the same forward and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``: matrix
  products (``bmm``, ``baddbmm``, ``einsum``) in bf16, their backward too; float32 master weights, gradient
  clipping and Adam as before;
* ``bf16``: hand-written: at the start of each update a bf16 copy of every stacked weight of the online
  network (differentiable cast: the gradient flows back to the float32 weight) and of the target network,
  made once and contiguous in the layout each ``baddbmm`` reads (``(S, in, out)``, no transposed view);
  every linear layer one bf16 ``baddbmm`` (bias included; the target network's copy is kept until its
  weights change, at a target update), activations in bf16 between layers, the softmoe
  router's logits, softmaxes and combine in float32 (they are small), Q-values back to float32 for the loss.

Timing: ``--rounds`` rounds, the variants alternating in order, each a slice of ``--updates`` calls of
``agent.train(1)`` (the same code around the forward: replay sampling, backward, per-member clipping,
fused Adam); the median ms per update and fp32 / variant (> 1: faster than float32) are reported. Rounding:
from the common state after warm-up, one update of each variant and the max abs difference of all weights
against float32's (``max |w - w_fp32|``), beside the largest change float32's own update made
(``max |dw_fp32|``) and the difference between two float32 engines (0: the comparison is deterministic),
and the L2 norm of the difference over all weights relative to the L2 norm of float32's update.

    python benchmarks/bf16_update.py [--archs dense,big:softmoe] [--members 64] [--warmup 300]
        [--rounds 6] [--updates 10] [--out /tmp/bf16_update.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch

from moerl.core.cpu_allocator import keep_freed_memory
from moerl.nn.experts import BatchedLinear
from moerl.nn.gating import SoftMoERouter
from moerl.nn.moe import MoEBlock
from moerl.rl.algos.dqn import DQNHyperParams, td_loss, td_target, total_loss
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.nets.batched import BatchedQNetwork
from moerl.rl.nets.qnetwork import DenseLayer

BF16 = torch.bfloat16
VARIANTS = ("fp32", "autocast", "bf16")


class AutocastDQN(BatchedDQN):
    """Today's update with its forward and loss under CPU autocast to bf16."""

    def _update_losses(self, *args: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        with torch.autocast("cpu", dtype=BF16):
            loss, td, aux = super()._update_losses(*args)  # type: ignore[arg-type]
        return loss.float(), td.float(), None if aux is None else aux.float()


def bf16_weights(net: BatchedQNetwork) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per linear layer (by module id) its stacked weight as one contiguous bf16 ``(S[*E], in, out)`` tensor
    and its bias as bf16 ``(S[*E], 1, out)``: one cast each, differentiable when grad mode is on."""
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for module in net.modules():
        if isinstance(module, DenseLayer):  # weight (S, out, in): transposed once, in the cast
            w, b = module.linear.weight, module.linear.bias
            out[id(module)] = (w.transpose(1, 2).to(BF16, memory_format=torch.contiguous_format),
                               b.to(BF16).unsqueeze(1))
        elif isinstance(module, BatchedLinear):  # weight (S, E, in, out), bias (S, E, 1, out)
            assert module.bias is not None
            out[id(module)] = (module.weight.flatten(0, 1).to(BF16), module.bias.flatten(0, 1).to(BF16))
    return out


def _softmoe16(router: SoftMoERouter, x: torch.Tensor, w16: dict[int, tuple[torch.Tensor, torch.Tensor]],
               ) -> torch.Tensor:
    """:meth:`SoftMoERouter.forward` (no record, ``normalize=False``) with the experts' layers in bf16."""
    assert router.scale is None, "normalize=True is not written here"
    s, b, m, d = x.shape
    n, p = router.num_experts, router.slots
    x = x.float()
    logits = torch.einsum("...bmd,...ds->...bms", x, router.phi)
    dispatch = torch.softmax(logits, dim=-2)
    combine = torch.softmax(logits, dim=-1)
    slot_in = torch.einsum("...bms,...bmd->...bsd", dispatch, x)
    h = slot_in.reshape(s, b, n, p, d).transpose(1, 2).reshape(s * n, b * p, d).to(BF16)
    experts = router.experts
    last = len(experts.layers) - 1
    for i, layer in enumerate(experts.layers):
        w, bias = w16[id(layer)]
        h = torch.baddbmm(bias, h, w)
        if i < last or experts.activate_output:
            h = torch.relu_(h)
    o = h.shape[-1]
    slot_out = h.float().reshape(s, n, b, p, o).transpose(1, 2).reshape(s, b, n * p, o)
    return torch.einsum("...bms,...bso->...bmo", combine, slot_out)


def forward16(net: BatchedQNetwork, w16: dict[int, tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
              ) -> torch.Tensor:
    """Q-values ``(S, B, A)`` in float32 of ``x`` ``(S, B, in)``, every linear layer a bf16 ``baddbmm``."""
    h = x
    for layer in net.net.layers:
        if isinstance(layer, DenseLayer):
            w, b = w16[id(layer)]
            h = torch.baddbmm(b, h.to(BF16), w)
            if layer.activate:
                h = torch.relu_(h)
        elif isinstance(layer, MoEBlock) and isinstance(layer.router, SoftMoERouter):
            lead = h.shape[:-1]
            tokens = h.reshape(*lead, layer.num_tokens, layer.in_features // layer.num_tokens)
            y = _softmoe16(layer.router, tokens, w16)
            h = y.reshape(*lead, layer.out_features) if layer.concat_tokens else y.mean(-2)
        else:
            raise NotImplementedError(f"bf16 forward written for dense layers and softmoe only, not {layer}")
    return h.float()


class Bf16DQN(BatchedDQN):
    """The update's forward in bf16 by hand: bf16 weight copies once per update, bf16 ``baddbmm`` per layer."""

    def _update_losses(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor,
                       rewards: torch.Tensor, dones: torch.Tensor, tasks: torch.Tensor | None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        assert not self.use_aux, "balancing losses are not written here"
        with torch.no_grad():
            next_feats, next_task = self._split(next_obs, tasks)
            next_q = forward16(self.q_net_target, self._target_weights(), next_feats)
            target = td_target(self.encoder.masked(next_q, next_task), rewards, dones, self._gamma)
        feats, _ = self._split(obs, tasks)
        q_all = forward16(self.q_net, bf16_weights(self.q_net), feats)
        td = td_loss(q_all, actions, target, self.hp.loss)
        return total_loss(td, None, self.hp.aux_loss_coef), td, None

    def _target_weights(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The target network's bf16 copy, cast again only when its weights changed (a target update or a
        load writes them in place, which bumps their version counters): once per ``target_update_interval``."""
        versions = tuple(p._version for p in self.q_net_target.parameters())
        if getattr(self, "_target16_versions", None) != versions:
            with torch.no_grad():
                self._target16 = bf16_weights(self.q_net_target)
            self._target16_versions = versions
        return self._target16


ENGINES = {"fp32": BatchedDQN, "autocast": AutocastDQN, "bf16": Bf16DQN}


def network(spec: str) -> dict:
    arch, _, router = spec.partition(":")
    return {"arch": arch, **({"router": router} if router else {})}


def weights(agent: BatchedDQN) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.q_net.parameters()]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def norm_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(torch.cat([(x - y).flatten() for x, y in zip(a, b, strict=True)]).norm())


def raw_bmm(members: int, experts: int, width: int, batch: int, repeats: int = 20) -> dict:
    """ms and GFLOP/s of one contiguous ``bmm`` ``(S*E, batch, width) x (S*E, width, width)``, fp32 and bf16."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(members * experts, batch, width, generator=g)
    b = torch.randn(members * experts, width, width, generator=g)
    pairs = {"fp32": (a, b), "bf16": (a.to(BF16), b.to(BF16))}
    samples: dict[str, list[float]] = {k: [] for k in pairs}
    for x, y in pairs.values():
        torch.bmm(x, y)
    for r in range(5):
        for k in pairs if r % 2 == 0 else reversed(pairs):
            x, y = pairs[k]
            start = time.perf_counter()
            for _ in range(repeats):
                torch.bmm(x, y)
            samples[k].append((time.perf_counter() - start) / repeats)
    flops = 2 * members * experts * batch * width * width
    sec = {k: statistics.median(v) for k, v in samples.items()}
    return {"shape": f"({members * experts}, {batch}, {width}) x ({members * experts}, {width}, {width})",
            "ms": {k: round(v * 1e3, 3) for k, v in sec.items()},
            "gflops": {k: round(flops / v / 1e9, 1) for k, v in sec.items()},
            "speedup": round(sec["fp32"] / sec["bf16"], 2)}


def measure(spec: str, members: int, args: argparse.Namespace) -> dict:
    suite = TaskSuiteEnv("cartpole", "crl", block_steps=25_000)
    hp = DQNHyperParams(learning_starts=100)
    seeds = list(range(members))
    warm = BatchedDQN(suite, seeds, network(spec), hp)
    warm.learn(args.warmup)
    state = warm.state_dict()  # every engine starts from this one state (weights, Adam, replay, streams)
    del warm
    agents = {name: cls(suite, seeds, network(spec), hp) for name, cls in ENGINES.items()}
    twin = BatchedDQN(suite, seeds, network(spec), hp)  # a second fp32 engine: the comparison is deterministic
    for agent in (*agents.values(), twin):
        # A copy each: the optimiser's load_state_dict keeps the given tensors, so engines loading one dict
        # would share (and each step) the same Adam moments.
        agent.load_state_dict(copy.deepcopy(state))
    before = weights(agents["fp32"])
    for agent in (*agents.values(), twin):
        agent.train(1)
    after = {name: weights(agent) for name, agent in agents.items()}
    rounding = {"max_dw_fp32": max_diff(after["fp32"], before), "fp32_twin": max_diff(weights(twin), after["fp32"])}
    rounding.update({name: max_diff(after[name], after["fp32"]) for name in VARIANTS[1:]})
    step = norm_diff(after["fp32"], before)  # relative size: |w - w_fp32| / |dw_fp32| over all weights (L2)
    rounding.update({f"{name}_rel": norm_diff(after[name], after["fp32"]) / step for name in VARIANTS[1:]})
    del twin, state
    samples: dict[str, list[float]] = {name: [] for name in agents}
    for agent in agents.values():
        agent.train(2)
    for r in range(args.rounds):
        for name in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            start = time.perf_counter()
            agents[name].train(args.updates)
            samples[name].append((time.perf_counter() - start) / args.updates)
    sec = {name: statistics.median(v) for name, v in samples.items()}
    return {"arch": spec, "members": members, "ms": {k: round(v * 1e3, 2) for k, v in sec.items()},
            "speedup": {k: round(sec["fp32"] / sec[k], 2) for k in VARIANTS[1:]},
            "rounding": {k: float(f"{v:.3g}") for k, v in rounding.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="dense,big:softmoe")
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--updates", type=int, default=10, help="updates per timed slice")
    parser.add_argument("--out", default="/tmp/bf16_update.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    raw = [raw_bmm(args.members, e, 128, 128) for e in (1, 4)]
    print("| raw bmm | fp32 ms | bf16 ms | fp32 GFLOP/s | bf16 GFLOP/s | fp32/bf16 |", flush=True)
    print("|---|---|---|---|---|---|", flush=True)
    for r in raw:
        print(f"| {r['shape']} | {r['ms']['fp32']} | {r['ms']['bf16']} | {r['gflops']['fp32']} "
              f"| {r['gflops']['bf16']} | {r['speedup']} |", flush=True)
    results = []
    print("\n| arch | members | fp32 ms/update | autocast ms | bf16 ms | fp32/autocast | fp32/bf16 "
          "| max abs dw fp32 | max abs w - w_fp32: autocast / bf16 (fp32 twin) "
          "| L2 w - w_fp32 / L2 dw_fp32: autocast / bf16 |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for spec in args.archs.split(","):
        r = measure(spec, args.members, args)
        results.append(r)
        d = r["rounding"]
        print(f"| {spec} | {args.members} | {r['ms']['fp32']} | {r['ms']['autocast']} | {r['ms']['bf16']} "
              f"| {r['speedup']['autocast']} | {r['speedup']['bf16']} | {d['max_dw_fp32']} "
              f"| {d['autocast']} / {d['bf16']} ({d['fp32_twin']}) | {d['autocast_rel']} / {d['bf16_rel']} |",
              flush=True)
        with open(args.out, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                       "threads": 1, "raw_bmm": raw, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
