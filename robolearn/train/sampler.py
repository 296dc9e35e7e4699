"""The trainer's batch order: deterministic, seed-derived, and the same whatever step a run resumes at."""

from __future__ import annotations

import numpy as np
import torch


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches for steps ``[start, total)``: step s takes positions [s·G, (s+1)·G) of a stream of
    per-epoch permutations seeded by (seed, epoch); process ``rank`` keeps its slice of each."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1
    ):
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.rank, self.world = rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        g = self.bs * self.world
        pos = np.arange(step * g, (step + 1) * g)[self.rank * self.bs : (self.rank + 1) * self.bs]
        return [int(self._perm(int(p // self.n))[p % self.n]) for p in pos]

    def __iter__(self):
        for step in range(self.start, self.total):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


__all__ = ["StepBatchSampler"]
