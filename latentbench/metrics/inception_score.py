"""Inception Score, streamed and mergeable across sampling shards (spec diffusability §10).

IS = mean over splits s of exp( E_{x in s} KL(p(y|x) || p_s(y)) ), with p_s the mean class
distribution of split s (Salimans et al. 2016, Sec. 4). The ADM evaluator
(guided-diffusion ``evaluations/evaluator.py``, ``compute_inception_score``) splits the sample
set into contiguous chunks of ``split_size = 5000`` images, reads p(y|x) as the softmax of the
1008-way Inception logits *without* the fc bias (``_create_softmax_graph`` multiplies pool3 by
the weight matrix only; torch-fidelity's ``logits_unbiased``) and reports the mean over splits.

For a split with n images, the KL term needs only two sums (with p̄ = S/n):
    E_x KL = (1/n) Σ_x Σ_y p_xy log p_xy  −  Σ_y p̄_y log p̄_y,
so each shard keeps, per global split it touches, n, S = Σ_x p_x and H = Σ_x Σ_y p_xy log p_xy.
Shards merge by adding those sums: the merged score equals the score of all logits at once
(to float64 rounding), whatever the sharding, because the splits are defined by the
global sample index, not by the shard.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from latentbench.io import atomic_path

__all__ = ["ADM_SPLIT_SIZE", "InceptionScore", "inception_score"]

ADM_SPLIT_SIZE = 5000  # guided-diffusion evaluations/evaluator.py compute_inception_score(split_size=5000)


class InceptionScore:
    """Per-split sufficient statistics of the Inception Score over globally indexed samples."""

    def __init__(self, num_classes: int, split_size: int = ADM_SPLIT_SIZE) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes: need at least 2 classes, got {num_classes}")
        if split_size < 1:
            raise ValueError(f"split_size: must be positive, got {split_size}")
        self.num_classes, self.split_size = int(num_classes), int(split_size)
        self.count: dict[int, int] = {}
        self.prob_sum: dict[int, np.ndarray] = {}
        self.plogp_sum: dict[int, float] = {}

    def update(self, logits: torch.Tensor, first_index: int) -> "InceptionScore":
        """Add samples with global indices ``first_index ...`` given their logits [N, K]."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits: expected [N, {self.num_classes}], got {tuple(logits.shape)}")
        if first_index < 0:
            raise ValueError(f"first_index: must be >= 0, got {first_index}")
        log_p = torch.log_softmax(logits.detach().double(), dim=1).cpu()
        p = log_p.exp()
        plogp = (p * log_p).sum(1)  # p log p -> 0 as p -> 0; log_softmax keeps it finite
        split = (first_index + torch.arange(len(p))) // self.split_size
        for s in split.unique().tolist():
            rows = split == s
            self._add(int(s), int(rows.sum()), p[rows].sum(0).numpy(), float(plogp[rows].sum()))
        return self

    def _add(self, split: int, n: int, prob_sum: np.ndarray, plogp_sum: float) -> None:
        self.count[split] = self.count.get(split, 0) + n
        self.prob_sum[split] = self.prob_sum.get(split, 0.0) + prob_sum
        self.plogp_sum[split] = self.plogp_sum.get(split, 0.0) + plogp_sum

    def merge(self, other: "InceptionScore") -> "InceptionScore":
        """Add another shard's sums (same class count and split size); returns self."""
        if (other.num_classes, other.split_size) != (self.num_classes, self.split_size):
            raise ValueError(
                f"other: {other.num_classes} classes / split {other.split_size} differ from "
                f"{self.num_classes} / {self.split_size}"
            )
        for s in other.count:
            self._add(s, other.count[s], other.prob_sum[s], other.plogp_sum[s])
        return self

    def split_scores(self) -> np.ndarray:
        """exp(E KL) of every split, in split order (ADM ``scores``)."""
        if not self.count:
            raise ValueError("InceptionScore: no samples were added")
        scores = []
        for s in sorted(self.count):
            n = self.count[s]
            p_bar = self.prob_sum[s] / n
            entropy_bar = float(np.sum(p_bar * np.log(np.clip(p_bar, 1e-300, None))))
            scores.append(np.exp(self.plogp_sum[s] / n - entropy_bar))
        return np.asarray(scores)

    def result(self) -> dict:
        """{"is": mean over splits, "is_std": std over splits, "splits", "num_samples"}."""
        scores = self.split_scores()
        return {
            "is": float(scores.mean()),
            "is_std": float(scores.std()),
            "splits": len(scores),
            "num_samples": int(sum(self.count.values())),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the per-split sums to an ``.npz`` atomically."""
        splits = sorted(self.count)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                num_classes=np.int64(self.num_classes),
                split_size=np.int64(self.split_size),
                splits=np.asarray(splits, dtype=np.int64),
                count=np.asarray([self.count[s] for s in splits], dtype=np.int64),
                prob_sum=np.stack([self.prob_sum[s] for s in splits]) if splits else np.zeros((0, self.num_classes)),
                plogp_sum=np.asarray([self.plogp_sum[s] for s in splits], dtype=np.float64),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InceptionScore":
        """Read sums written by ``save``; a missing or corrupt file raises naming it."""
        try:
            with np.load(path, allow_pickle=False) as data:
                score = cls(int(data["num_classes"]), int(data["split_size"]))
                for s, n, ps, h in zip(data["splits"], data["count"], data["prob_sum"], data["plogp_sum"]):
                    score._add(int(s), int(n), np.asarray(ps, dtype=np.float64), float(h))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: file not found") from None
        except (KeyError, ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable Inception Score file ({exc})") from None
        return score


def inception_score(logits: torch.Tensor, split_size: int = ADM_SPLIT_SIZE) -> dict:
    """IS of a whole sample set given its logits [N, K] (contiguous splits of ``split_size``)."""
    return InceptionScore(logits.shape[-1], split_size).update(logits, 0).result()
