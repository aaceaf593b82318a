"""The routing paper's Table 2 (Rosenbaum et al. 2018, appendix), for ``moerl report`` to show beside our runs.

Test accuracy in %, after epochs 1 / 5 / 10 / 20 / 50 / 100, copied from the paper's Table 2 ("Numeric results
for Figures 4 through 8"). Which of our envs each paper dataset stands beside, and how honestly:

* ``mnist-mtl``: MNIST-MTL, the same recipe on the same source data (our budget differs: see docs/routing.md).
* ``fashion-5way-mtl``: CIFAR-MTL's structure (tasks of 5 classes) on other data (Fashion-MNIST); CIFAR-MTL
  cannot be had offline. Its numbers are shown for the shape of the comparison only, never as a target.

Why a table here and not in the docs: the report puts the paper's numbers in the same row as the runs', so a
reader compares like with like (same algo, same epochs) without a second table.
"""

from __future__ import annotations

EPOCHS = (1, 5, 10, 20, 50, 100)

Rows = dict[tuple[str, str], tuple[int, ...]]

_CIFAR: Rows = {
    # Fig. 4 (router algorithms; per-task agents unless named single)
    ("wpl", "layered"): (31, 53, 57, 58, 60, 60),
    ("q-tabular", "layered"): (20, 36, 47, 50, 55, 55),
    ("q-approx", "layered"): (20, 20, 20, 20, 24, 25),
    ("reinforce", "layered"): (20, 20, 20, 20, 20, 20),
    # Fig. 5 (routing architectures)
    ("wpl", "recursive"): (31, 43, 45, 48, 48, 46),
    ("dispatched-reinforce", "layered"): (20, 23, 28, 37, 42, 41),
    ("reinforce-single", "layered"): (20, 23, 33, 42, 44, 44),
    ("soft-mixture-all-fc", "layered"): (20, 24, 27, 30, 32, 35),
    # Fig. 6 (baselines)
    ("task-specific-all-fc", "layered"): (21, 29, 33, 36, 42, 42),
    ("task-specific-1-fc", "layered"): (27, 34, 39, 42, 48, 49),
    ("cross-stitch-all-fc", "layered"): (26, 37, 42, 49, 52, 53),
}
_MNIST: Rows = {  # Fig. 8
    ("wpl", "layered"): (90, 90, 98, 99, 99, 99),
    ("task-specific-all-fc", "layered"): (90, 91, 94, 95, 95, 96),
    ("task-specific-1-fc", "layered"): (90, 90, 91, 92, 93, 95),
    ("soft-mixture-all-fc", "layered"): (90, 90, 90, 90, 90, 90),
    ("cross-stitch-all-fc", "layered"): (90, 90, 90, 90, 90, 90),
}

#: our env -> (the paper's dataset as the report names it, its rows)
PAPER_TABLE2: dict[str, tuple[str, Rows]] = {
    "mnist-mtl": ("MNIST-MTL", _MNIST),
    "fashion-5way-mtl": ("CIFAR-MTL, other data", _CIFAR),
}


def paper_row(env: str, algo: str, mode: str = "layered") -> tuple[str, dict[int, int]] | None:
    """The paper's dataset name and its accuracy (%) per epoch for this run setting, or None if the paper
    has no such row (no analogue of ``env``, or ``algo`` / ``mode`` not in its table)."""
    empty: Rows = {}
    dataset, rows = PAPER_TABLE2.get(env, ("", empty))
    row = rows.get((algo, mode))
    return None if row is None else (dataset, dict(zip(EPOCHS, row, strict=True)))
