"""Verification protocol (pairs, cross-validated threshold) and real LFW accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fr_shield.core.errors import DataError
from fr_shield.core.transforms import label as level_label
from fr_shield.study.verification import VerifyConfig, cross_validated_accuracy, pair_scores, sample_pairs, verify


def test_pairs_are_seeded_distinct_and_balanced(tmp_path):
    identities = {f"p{i}": [tmp_path / f"p{i}_{j}.jpg" for j in range(3)] for i in range(6)}
    pairs = sample_pairs(identities, 20, seed=1)
    assert pairs == sample_pairs(identities, 20, seed=1) != sample_pairs(identities, 20, seed=2)
    assert len(set(pairs)) == 20 and sum(same for *_, same in pairs) == 10
    for a, b, same in pairs:
        assert (a.name.split("_")[0] == b.name.split("_")[0]) == same and a != b


def test_pairs_need_enough_data(tmp_path):
    with pytest.raises(DataError, match="at least"):
        sample_pairs({"solo": [tmp_path / "a.jpg"]}, 10, seed=0)
    with pytest.raises(DataError, match="could draw only"):
        sample_pairs({"a": [tmp_path / "a1", tmp_path / "a2"], "b": [tmp_path / "b1"]}, 40, seed=0)


def test_cross_validated_accuracy_on_separable_and_random_scores():
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 100)
    separable = np.where(same, 0.8, 0.1) + rng.normal(0, 0.05, 200)
    accuracy, _, threshold = cross_validated_accuracy(separable, same, 10, 0)
    assert accuracy == 1.0 and 0.25 < threshold < 0.65
    chance, _, _ = cross_validated_accuracy(rng.random(200), same, 10, 0)
    assert 0.3 < chance < 0.7


def test_pair_scores_cosine_and_euclidean():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(pair_scores(embeddings, "cosine"), torch.tensor([1.0, 0.0]))
    assert torch.allclose(pair_scores(embeddings, "euclidean"), torch.tensor([0.0, -(5 ** 0.5)]))


def test_level_labels():
    assert level_label("median_blur", 9) == "median_k9"
    assert level_label("gaussian_blur2d", 3) == "gaussian_k3"
    assert level_label("max_blur_pool2d", 5) == "max_k5"
    assert level_label("blur_pool2d", 17) == "pool_k17"
    assert level_label("jpeg", 75) == "jpeg_q75"
    assert level_label("resize", 0.5) == "resize_x0.5"
    assert level_label("none", None) == "none"


@pytest.mark.real
def test_real_models_verify_lfw_pairs(lfw_root, weight_cache, tmp_path):
    """The three ports, with our detection and alignment, on 200 seeded LFW pairs."""
    report = verify(VerifyConfig(lfw_root, pairs=200, seed=7, face_cache=tmp_path / "faces.json"), progress=False)
    for name, row in report["models"].items():
        assert row["pairs"] >= 195, name
        assert row["accuracy"] >= 0.95, (name, row)
        assert row["same_mean"] > row["different_mean"], name
