"""S seeds of one Q-network at once: stacked weights, one forward over a leading seed dimension.

Why stacked weights in the plain modules: the architectures (placements, routers, token layouts, records)
are written once, in :mod:`moerl.nn`, and every layer there also runs with *seed-stacked* parameters (a
leading dimension ``S`` on each weight; see :class:`~moerl.rl.nets.qnetwork.MoEQNetwork`). :class:`BatchedQNetwork`
keeps an ordinary :class:`~moerl.rl.nets.qnetwork.MoEQNetwork` whose parameters have been replaced by stacked
ones and calls it on ``(S, B, in)`` inputs: each linear layer is one batched matrix product over all seeds
(and experts; see :class:`~moerl.nn.experts.BatchedLinear`), the conv torso (``torso: conv``) one grouped
convolution over all seeds (and experts; :func:`~moerl.nn.conv.grid_conv_relu`), each reduction is taken per seed. Nothing is re-implemented: a change to a router or a
placement reaches the batched engine unchanged, and the tests check that the batched forward,
gradients, balancing losses and metrics of seed ``i`` are those of the plain network holding seed
``i``'s weights (``tests/test_nn_batched.py``): equal up to float32 rounding, since a batched matmul and
the plain network's ``addmm`` may round differently in the last bit (max abs difference ~1e-7 on Q-values
in the tests; the MoE layers' ``baddbmm`` is often bit-for-bit). A seed's forward alone (``S = 1``) and
inside a batch are bit-for-bit equal on CPU.

(An earlier version ran the plain network under ``torch.vmap(functional_call(...))``. It computed the
same, but ``vmap`` splits ``baddbmm`` into ``bmm`` + ``add`` and adds a dispatch cost to every operation:
about 0.6 ms of a 10-seed greedy forward's 0.75 ms, and half the time of a training forward, on one CPU
thread.)

The stacked tensors are real :class:`torch.nn.Parameter`\\ s, so one optimiser over
:meth:`BatchedQNetwork.parameters` trains every seed: Adam (and every elementwise optimiser: SGD,
RMSprop...) applied to a stacked tensor is exactly ``S`` independent Adams, one per slice, all
stepping together. What does not decompose elementwise is provided here: per-seed gradient clipping
(:func:`clip_grad_norm_per_seed`), per-seed balancing losses and metrics (:class:`BatchedRecord`).

Randomness (the ``topk`` router's logit noise, drawn only in training mode when ``noise_std > 0``): a
random call in the forward draws *one* tensor for all seeds from torch's global generator, so seed ``i``'s
noise is slice ``i`` of ``torch.randn(S, *shape)`` drawn at that point (tested). The output is therefore a
deterministic function of the weights, the inputs and the global generator's state (run the training
inside a :class:`moerl.core.seeding.TorchStream` to own that state), but seed ``i``'s noise depends on ``S``
and on ``i``: a seed trained alone and the same seed trained in a batch see different (equally
distributed, independent) noise. Without noise (every other configuration, and evaluation mode) a seed's
forward does not depend on the other seeds at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from moerl.core.seeding import seeded
from moerl.nn.metrics import DORMANT_TAUS
from moerl.nn.record import ForwardRecord, HiddenRecord, RoutingRecord
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig

__all__ = ["BatchedQNetwork", "BatchedRecord", "clip_grad_norm_per_seed"]


@dataclass
class BatchedRecord:
    """A :class:`~moerl.nn.record.ForwardRecord` for ``S`` seeds: every tensor has a leading seed dimension.

    ``routing`` and ``hidden`` hold the same records, under the same names, as the plain network's
    ``ForwardRecord`` (``RoutingRecord.usage``: (S, B, E); ``entropy`` and ``aux_loss``: (S,);
    ``HiddenRecord.values``: (S, N, units) or (S, E, N, units); ``processed``: (S, E, N) or None).
    """

    num_seeds: int
    routing: dict[str, RoutingRecord]
    hidden: dict[str, HiddenRecord]

    def aux_loss(self) -> torch.Tensor:
        """(S,) sum of every MoE layer's balancing loss per seed (differentiable); zeros without MoE layers."""
        if not self.routing:
            device = next((h.values.device for h in self.hidden.values()), None)
            return torch.zeros(self.num_seeds, device=device)
        return torch.stack([r.aux_loss for r in self.routing.values()]).sum(0)

    def record(self, seed_index: int) -> ForwardRecord:
        """Seed ``seed_index``'s slice as the plain network's :class:`ForwardRecord` (views, not copies)."""
        i = seed_index
        return ForwardRecord(
            routing={name: RoutingRecord(r.usage[i], r.entropy[i], r.aux_loss[i]) for name, r in self.routing.items()},
            hidden={name: HiddenRecord(h.values[i], None if h.processed is None else h.processed[i])
                    for name, h in self.hidden.items()},
        )

    def metrics(self, taus: tuple[float, ...] = DORMANT_TAUS) -> dict[str, torch.Tensor]:
        """:func:`moerl.nn.metrics.forward_metrics` for every seed at once: the same keys, each an (S,) tensor.

        Computed with the same reductions as the single-network metrics, so ``metrics()[key][i]`` equals
        ``forward_metrics(record(i))[key]``.
        """
        out: dict[str, torch.Tensor] = {}
        scores = {name: _dormant_scores(h.values, h.processed) for name, h in self.hidden.items()}
        for tau in taus:
            total, dormant = 0, None
            for name, s in scores.items():
                flags = (s <= tau).flatten(1)
                out[f"dormant/tau{tau:g}/{name}"] = flags.float().mean(1)
                total += flags.shape[1]
                count = flags.sum(1)
                dormant = count if dormant is None else dormant + count
            if total and dormant is not None:
                out[f"dormant/tau{tau:g}/all"] = dormant.double() / total
        for name, rout in self.routing.items():
            usage = rout.usage.detach().float().mean(1)  # (S, E)
            for e in range(usage.shape[1]):
                out[f"router/{name}/usage_expert{e}"] = usage[:, e]
            out[f"router/{name}/entropy"] = rout.entropy.detach()
            out[f"router/{name}/aux_loss"] = rout.aux_loss.detach()
        return out


def _dormant_scores(values: torch.Tensor, processed: torch.Tensor | None) -> torch.Tensor:
    """:func:`moerl.nn.metrics.dormant_scores` with a leading seed dimension (no data-dependent branch)."""
    a = values.detach().abs()
    if a.dim() == 3:  # (S, N, units)
        mean_abs = a.mean(1)
    elif processed is None:  # (S, E, N, units)
        mean_abs = a.mean(2)
    else:
        w = processed.to(a.dtype).unsqueeze(-1)  # (S, E, N, 1)
        mean_abs = (a * w).sum(2) / w.sum(2).clamp_min(1.0)
    layer_mean = mean_abs.flatten(1).mean(1).view(-1, *([1] * (mean_abs.dim() - 1)))
    return torch.where(layer_mean > 0, mean_abs / layer_mean, torch.zeros_like(mean_abs))


def _set_tensor(module: nn.Module, dotted: str, value: torch.Tensor) -> None:
    prefix, _, leaf = dotted.rpartition(".")
    owner = module.get_submodule(prefix)
    if isinstance(value, nn.Parameter):
        owner.register_parameter(leaf, value)
    else:
        owner.register_buffer(leaf, value)


class BatchedQNetwork(nn.Module):
    """``S`` independent :class:`~moerl.rl.nets.qnetwork.MoEQNetwork`\\ s of one architecture, as one module.

    ``forward(x (S, B, in), task_id (S, B) or None) -> (S, B, n_actions)``; slice ``i`` is what seed ``i``'s
    plain network computes on ``x[i]``. Parameters are stacked (leading dimension ``S``) under ``net``,
    with the plain network's names: ``state_dict()`` keys are ``"net." + key`` of the plain network's.

    Build it with :meth:`from_seeds` (seed ``i``'s weights: the network built inside ``seeded(seeds[i])``)
    or from plain networks; get seed ``i`` back with :meth:`network` or :meth:`state_dict_of`.
    """

    def __init__(self, networks: Sequence[MoEQNetwork]):
        super().__init__()
        if not networks:
            raise ValueError("BatchedQNetwork needs at least one network")
        first = networks[0]
        for k, other in enumerate(networks):
            mine = (other.in_features, other.n_actions, other.config, other.grid_shape)
            theirs = (first.in_features, first.n_actions, first.config, first.grid_shape)
            if mine != theirs:
                raise ValueError(f"network {k} differs from network 0: {mine} vs {theirs}")
        self.config: QNetworkConfig = copy.deepcopy(first.config)
        self.in_features, self.n_actions = first.in_features, first.n_actions
        #: The grid the features begin with (``torso: conv``), as :class:`MoEQNetwork` takes it.
        self.grid_shape = first.grid_shape
        self.num_seeds = len(networks)
        self.net = self._skeleton()
        states = [dict(n.named_parameters()) for n in networks]
        buffers = [dict(n.named_buffers()) for n in networks]
        with torch.no_grad():
            for name, _ in list(self.net.named_parameters()):
                stacked = torch.stack([s[name].detach() for s in states])
                _set_tensor(self.net, name, nn.Parameter(stacked, requires_grad=states[0][name].requires_grad))
            for name, _ in list(self.net.named_buffers()):
                _set_tensor(self.net, name, torch.stack([b[name].detach() for b in buffers]))
        self.train(first.training)

    @classmethod
    def from_seeds(cls, in_features: int, n_actions: int, config: QNetworkConfig,
                   seeds: Sequence[int], grid_shape: tuple[int, int, int] | None = None) -> BatchedQNetwork:
        """Seed ``i``'s weights: ``MoEQNetwork(in_features, n_actions, config, grid_shape)`` built inside
        ``seeded(seeds[i])``.

        The caller's random stream is left untouched.
        """

        networks = []
        for seed in seeds:
            with seeded(seed):
                networks.append(MoEQNetwork(in_features, n_actions, copy.deepcopy(config), grid_shape))
        return cls(networks)

    def _skeleton(self) -> MoEQNetwork:
        """A plain network of this architecture with no storage (meta tensors) and no random draws."""
        with torch.device("meta"):
            return MoEQNetwork(self.in_features, self.n_actions, copy.deepcopy(self.config), self.grid_shape)

    # --- seeds in and out ---------------------------------------------------------------------------

    def state_dict_of(self, seed_index: int) -> dict[str, torch.Tensor]:
        """Seed ``seed_index``'s weights as a plain :class:`MoEQNetwork` state dict (copies)."""
        return {k: v[seed_index].detach().clone() for k, v in self.net.state_dict().items()}

    def network(self, seed_index: int) -> MoEQNetwork:
        """A plain :class:`MoEQNetwork` holding (a copy of) seed ``seed_index``'s weights, in this module's mode."""
        net = self._skeleton()
        net.load_state_dict(self.state_dict_of(seed_index), assign=True)
        return net.train(self.training)

    # --- forward ------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        """Q-values ``(S, B, n_actions)`` of features ``x`` ``(S, B, in)`` (+ task ids ``(S, B)``)."""
        self._check(x, task_id)
        return self.net(x, task_id)

    def forward_record(self, x: torch.Tensor,
                       task_id: torch.Tensor | None = None) -> tuple[torch.Tensor, BatchedRecord]:
        """Q-values and the per-seed record (balancing losses, routing, hidden activations) of one pass."""
        self._check(x, task_id)
        rec = ForwardRecord()
        q = self.net(x, task_id, rec)
        return q, BatchedRecord(num_seeds=self.num_seeds, routing=rec.routing, hidden=rec.hidden)

    def _check(self, x: torch.Tensor, task_id: torch.Tensor | None) -> None:
        s = self.num_seeds
        if x.dim() != 3 or x.shape[0] != s or x.shape[2] != self.in_features:
            raise ValueError(f"expected features of shape ({s}, B, {self.in_features}), got {tuple(x.shape)}")
        if task_id is not None and tuple(task_id.shape) != tuple(x.shape[:2]):
            raise ValueError(f"expected task ids of shape {tuple(x.shape[:2])}, got {tuple(task_id.shape)}")

    # --- target networks ----------------------------------------------------------------------------

    @torch.no_grad()
    def copy_from_(self, source: BatchedQNetwork) -> None:
        """Copy ``source``'s weights into this network (a hard target update, cheaper than ``load_state_dict``)."""
        mine, theirs = list(self.net.state_dict().values()), list(source.net.state_dict().values())
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs, strict=True)):
            raise ValueError("copy_from_ needs a BatchedQNetwork of the same architecture and number of seeds")
        torch._foreach_copy_(mine, theirs)

    def extra_repr(self) -> str:
        return f"seeds={self.num_seeds}, in={self.in_features}, actions={self.n_actions}"


@torch.no_grad()
def clip_grad_norm_per_seed(parameters: Iterable[torch.Tensor], max_norm: float,
                            norm_type: float = 2.0) -> torch.Tensor:
    """Per-seed ``torch.nn.utils.clip_grad_norm_`` on stacked parameters (leading dimension = seed).

    Seed ``i``'s gradients (slice ``i`` of every ``p.grad``) are scaled by ``min(1, max_norm /
    (norm_i + 1e-6))`` with ``norm_i`` the total ``norm_type``-norm of seed ``i``'s gradients alone: what
    ``clip_grad_norm_(network(i).parameters(), max_norm)`` does to seed ``i``'s plain network (same
    reductions, so bit-for-bit on CPU). Returns the (S,) total norms before clipping.
    """
    params = list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(params[0].shape[0], device=params[0].device) if params else torch.zeros(0)
    s = grads[0].shape[0]
    norm_type = float(norm_type)
    norms = [torch.linalg.vector_norm(g.reshape(s, -1), norm_type, dim=1) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms, dim=1), norm_type, dim=1)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(s, *([1] * (g.dim() - 1))))
    return total
