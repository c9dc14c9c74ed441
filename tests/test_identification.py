"""Rank-k identification on hand-built similarity matrices."""

import math

import numpy as np
import pytest
import torch

from fr_shield.study.identification import evaluate, ranks, similarity_matrix

GALLERY = ["a", "a", "b", "c"]


def rank_k_accuracy(similarity, probe_labels, gallery_labels, ks):
    """``{k: fraction of probes whose identity is among the k most similar gallery items}``."""
    result = ranks(similarity, probe_labels, gallery_labels)
    return {k: result.accuracy(k) for k in ks}


def test_rank_k_simple():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.2],  # "a": best is its own -> rank 1
            [0.1, 0.2, 0.3, 0.9],  # "b": c then b -> rank 2
            [0.5, 0.4, 0.3, 0.1],  # "c": a, a, b ahead -> rank 4 (same-identity items never push down)
        ]
    )
    result = ranks(sim, ["a", "b", "c"], GALLERY)
    assert result.ranks.tolist() == [1, 2, 4]
    acc = rank_k_accuracy(sim, ["a", "b", "c"], GALLERY, ks=(1, 2, 3, 4))
    assert acc == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3), 4: 1.0}


def test_ties_are_pessimistic_and_order_free():
    sim = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # every item tied: the wrong ones rank ahead
    assert ranks(sim, ["a"], GALLERY).ranks.tolist() == [3]
    assert rank_k_accuracy(sim, ["a"], GALLERY, ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}
    # the same with the gallery reversed
    assert ranks(sim.flip(1), ["a"], GALLERY[::-1]).ranks.tolist() == [3]
    # tie only with a same-identity item: no penalty
    assert ranks(torch.tensor([[0.7, 0.7, 0.1, 0.2]]), ["a"], GALLERY).ranks.tolist() == [1]


def test_k_larger_than_gallery():
    sim = torch.tensor([[0.0, 0.0, 0.9, 0.8]])
    assert rank_k_accuracy(sim, ["a"], GALLERY, ks=(1, 100)) == {1: 0.0, 100: 1.0}


def test_probe_without_gallery_identity_is_wrong_and_reported():
    sim = torch.tensor([[0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])
    result = ranks(sim, ["a", "z"], GALLERY)
    assert result.no_gallery.tolist() == [False, True]
    assert rank_k_accuracy(sim, ["a", "z"], GALLERY, ks=(1, 100)) == {1: 0.5, 100: 0.5}
    rows = evaluate(sim, ["a", "z"], GALLERY, [False, True])
    assert rows[0] == {"subset": "all", "top1": 0.5, "top5": 0.5, "n_probes": 2, "n_no_gallery": 1}
    assert rows[1] == {"subset": "protected", "top1": 0.0, "top5": 0.0, "n_probes": 1, "n_no_gallery": 1}


def test_evaluate_subsets_numpy_and_integer_labels():
    sim = np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.2], [0.8, 0.1, 0.2]])
    rows = evaluate(sim, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([False, True, True]), ks=(1, 2))
    assert [r["subset"] for r in rows] == ["all", "protected"]
    assert rows[0]["top1"] == pytest.approx(2 / 3) and rows[0]["n_probes"] == 3
    assert rows[1]["top1"] == 0.5 and rows[1]["top2"] == 1.0 and rows[1]["n_probes"] == 2


def test_empty_protected_subset_is_nan():
    rows = evaluate(torch.eye(2), ["a", "b"], ["a", "b"], [False, False])
    assert rows[0]["top1"] == 1.0
    assert math.isnan(rows[1]["top1"]) and rows[1]["n_probes"] == 0


def test_input_checks():
    with pytest.raises(ValueError, match="NaN"):
        ranks(torch.tensor([[float("nan")]]), ["a"], ["a"])
    with pytest.raises(ValueError, match="labels"):
        ranks(torch.zeros(2, 3), ["a"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="positive integer"):
        evaluate(torch.zeros(1, 1), ["a"], ["a"], [False], ks=(0,))
    with pytest.raises(ValueError, match="probe_protected_mask"):
        evaluate(torch.zeros(1, 1), ["a"], ["a"], [True, False])


def test_similarity_matrix_cosine_and_euclidean():
    probes = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    gallery = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    cos = similarity_matrix(probes, gallery, "cosine")
    expected = torch.tensor([[1.0, 0.0, 2**-0.5], [0.0, 1.0, 2**-0.5]])
    torch.testing.assert_close(cos, expected)
    euc = similarity_matrix(probes, gallery, "euclidean")
    torch.testing.assert_close(euc, -torch.tensor([[1.0, 2**0.5, 1.0], [8**0.5, 1.0, 2**0.5]]))
    # higher = more similar for both kinds: each probe's nearest is its own axis
    assert euc.argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="kind"):
        similarity_matrix(probes, gallery, "dot")
    with pytest.raises(ValueError):
        similarity_matrix(probes, torch.zeros(2, 3))


def test_end_to_end_embeddings():
    g = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    labels = ["a", "a", "b", "b", "c", "c"]
    probes = g[[0, 2, 4]] + 0.01
    acc = rank_k_accuracy(similarity_matrix(probes, g), ["a", "b", "c"], labels, ks=(1,))
    assert acc == {1: 1.0}
