"""Flush denormal floats to zero on the CPU (``torch.set_flush_denormal``) in the batched engines' processes.

Why: Adam's second moments of weights whose gradients have been near zero for a while decay below float32's
smallest normal number (1.2e-38) and become *denormal*; x86 cores compute with denormals through a slow
microcode path. Measured on one thread (this project's AVX-512 machine, loaded): after 6k steps of a 10-seed
big/softmoe DQN on cartpole-crl, 6.4% of the moments were denormal and one fused Adam step took 7.1 ms,
0.70 ms with denormals flushed; the whole 20k-step run took 141.5 s of CPU against 111.0 s flushed
(``benchmarks/denormals.py`` repeats this, per variant).

What it changes: an operation that would produce a denormal produces 0 instead, and a denormal input counts
as 0 (FTZ and DAZ). A denormal Adam moment moves its weight by ~1e-34 or less, below float32's resolution
for any weight that is not itself tiny, so training does not change: the weights of that 20k-step run were
bit for bit those of the run without flushing, and the golden run (``tests/test_golden_run.py``) is
unchanged. The flag is per thread (the MXCSR register), so it covers the engines' one-thread processes;
the SB3 engine, the reference, is left as SB3 runs.
"""

from __future__ import annotations

import torch


def flush_denormals() -> bool:
    """Flush denormals to zero on the calling thread; True where the CPU supports it (x86 with SSE3)."""
    return bool(torch.set_flush_denormal(True))
