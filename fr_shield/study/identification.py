"""Closed-set identification: rank-k accuracy of probes matched against a gallery.

Conventions:

- ``similarity[p, g]``: higher means more alike ("euclidean" similarity is minus the distance).
- **Rank** of a probe: 1 + the number of gallery items of *other* identities whose similarity is
  ``>=`` that of the probe's most similar same-identity item. Ties are broken **pessimistically**
  (a wrong item tied with the best correct one ranks ahead of it), so the result never depends on
  gallery order and a degenerate model (all similarities equal) scores 0, not 100 %.
- Rank-k is correct when rank <= k; a k larger than the gallery simply makes every probe with a
  same-identity gallery item correct.
- A probe whose identity has no gallery item is always wrong; ``RankResult.no_gallery`` marks it
  and ``evaluate`` reports how many there were (``n_no_gallery``).
- Accuracies are fractions in [0, 1]; over zero probes they are NaN.
- NaN similarities raise ``ValueError`` (they come from broken embeddings, never from faces).

Inputs may be torch tensors, numpy arrays or (for labels) sequences of strings or integers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(x: ArrayLike | Sequence) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        t = t.double()
    return t


def _labels(labels: ArrayLike | Sequence) -> list:
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        return labels.tolist()
    return list(labels)


def _encode(
    probe_labels: ArrayLike | Sequence, gallery_labels: ArrayLike | Sequence
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map both label lists to shared integer codes."""
    probes, gallery = _labels(probe_labels), _labels(gallery_labels)
    codes: dict = {}
    for label in gallery + probes:
        codes.setdefault(label, len(codes))
    return (
        torch.tensor([codes[x] for x in probes], dtype=torch.long),
        torch.tensor([codes[x] for x in gallery], dtype=torch.long),
    )


def similarity_matrix(probe_emb: ArrayLike, gallery_emb: ArrayLike, kind: str = "cosine") -> torch.Tensor:
    """``[P, D]`` x ``[G, D]`` -> ``[P, G]`` similarities (torch tensor; higher = more similar).

    ``kind="cosine"``: cosine similarity (a zero vector has similarity 0 with everything);
    ``kind="euclidean"``: minus the Euclidean distance.
    """
    p, g = _as_tensor(probe_emb), _as_tensor(gallery_emb)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be [P, D] and [G, D], got {tuple(p.shape)} and {tuple(g.shape)}")
    dtype = torch.promote_types(torch.promote_types(p.dtype, g.dtype), torch.float32)
    p, g = p.to(dtype), g.to(dtype=dtype, device=p.device)
    if kind == "cosine":
        return F.normalize(p, dim=1) @ F.normalize(g, dim=1).T
    if kind == "euclidean":
        return -torch.cdist(p, g)
    raise ValueError(f"unknown similarity kind '{kind}'; use 'cosine' or 'euclidean'")


@dataclass
class RankResult:
    """Per-probe rank of the first correct gallery match (pessimistic ties).

    ``ranks[i]`` is meaningless where ``no_gallery[i]`` (set to gallery size + 1 there).
    """

    ranks: torch.Tensor  # [P] int64, 1-based
    no_gallery: torch.Tensor  # [P] bool

    def hits(self, k: int) -> torch.Tensor:
        """[P] bool: rank-k correct."""
        return (~self.no_gallery) & (self.ranks <= k)

    def accuracy(self, k: int, mask: torch.Tensor | None = None) -> float:
        hits = self.hits(k) if mask is None else self.hits(k)[mask]
        return float(hits.double().mean()) if hits.numel() else float("nan")


def ranks(
    similarity: ArrayLike, probe_labels: ArrayLike | Sequence, gallery_labels: ArrayLike | Sequence
) -> RankResult:
    """The rank of every probe's first correct gallery item (see the module docstring)."""
    sim = _as_tensor(similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be [P, G], got {tuple(sim.shape)}")
    p_codes, g_codes = _encode(probe_labels, gallery_labels)
    if sim.shape != (len(p_codes), len(g_codes)):
        raise ValueError(
            f"similarity is {tuple(sim.shape)} but there are {len(p_codes)} probe and {len(g_codes)} gallery labels"
        )
    if torch.isnan(sim).any():
        raise ValueError("similarity contains NaN; check the embeddings")
    sim = sim.cpu()
    match = p_codes[:, None] == g_codes[None, :]  # [P, G]
    no_gallery = ~match.any(dim=1)
    if sim.shape[1] == 0:  # empty gallery: every probe lacks a gallery item
        best_correct = torch.full((sim.shape[0],), -torch.inf, dtype=sim.dtype)
    else:
        best_correct = torch.where(match, sim, torch.full_like(sim, -torch.inf)).amax(dim=1)
    ahead = (~match) & (sim >= best_correct[:, None])
    rank = 1 + ahead.sum(dim=1)
    rank = torch.where(no_gallery, torch.full_like(rank, sim.shape[1] + 1), rank)
    return RankResult(ranks=rank.long(), no_gallery=no_gallery)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"each k must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


def evaluate(
    similarity: ArrayLike,
    probe_labels: ArrayLike | Sequence,
    gallery_labels: ArrayLike | Sequence,
    probe_protected_mask: ArrayLike | Sequence[bool],
    ks: Iterable[int] = (1, 5),
) -> list[dict]:
    """Tidy rows for the subsets "all" (every probe) and "protected" (probes of protected identities).

    Each row: ``{"subset", "top1", "top5", ..., "n_probes", "n_no_gallery"}`` (one ``top{k}`` per k).
    """
    ks = _check_ks(ks)
    result = ranks(similarity, probe_labels, gallery_labels)
    mask = torch.as_tensor(np.asarray(_labels(probe_protected_mask), dtype=bool))
    if mask.shape != result.ranks.shape:
        raise ValueError(f"probe_protected_mask has {mask.numel()} entries for {result.ranks.numel()} probes")
    rows = []
    for subset, subset_mask in (("all", torch.ones_like(mask)), ("protected", mask)):
        row: dict = {"subset": subset}
        for k in ks:
            row[f"top{k}"] = result.accuracy(k, subset_mask)
        row["n_probes"] = int(subset_mask.sum())
        row["n_no_gallery"] = int((result.no_gallery & subset_mask).sum())
        rows.append(row)
    return rows
