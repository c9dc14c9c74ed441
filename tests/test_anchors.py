"""Targeted identity shift (fr_shield.attacks.anchors) on tiny networks and, with real weights, a
real pool folder."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinyFR

from fr_shield.attacks import Branch, ProtectionAttack, ProtectionObjective
from fr_shield.attacks.anchors import AnchorPool, choose_anchors, pool_digest, pool_photos
from fr_shield.attacks.attack import OptimiserSettings
from fr_shield.attacks.objective import crops_of
from fr_shield.core.errors import ConfigError
from test_attacks import FACE, photo


def test_the_anchor_is_the_pool_face_least_like_the_clean_one_on_average():
    models = [TinyFR(0), TinyFR(1)]
    clean = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    pool = [torch.tensor([[1.0, 0.1], [-1.0, 0.0], [0.0, -1.0]])] * 2
    anchors = choose_anchors(clean, pool, models)
    assert torch.equal(anchors[0][0], pool[0][1]) and torch.equal(anchors[0][1], pool[0][2])
    assert torch.equal(anchors[1], anchors[0])  # one anchor person per face, for every model


def test_the_pull_moves_every_surrogate_toward_the_same_anchor():
    models = [TinyFR(0), TinyFR(1, size=40, name="tiny40")]
    image = photo()
    pool_images = torch.cat([photo(seed) for seed in (5, 6, 7)])
    pool = [model(torch.cat([F.interpolate(pool_images, size=model.spec.input_size)])) for model in models]

    def attack(anchor_pool):
        objective = ProtectionObjective(models, [Branch()], "norm", 0.0, anchor_pool=anchor_pool)
        return ProtectionAttack(objective, OptimiserSettings(steps=15, step_size=0.01, linf=0.05)), objective

    pulled, objective = attack(pool)
    anchors = objective.targets(image, [[FACE]]).anchors
    plain, _ = attack(None)
    with_anchor, without = pulled(image, [[FACE]]).protected, plain(image, [[FACE]]).protected
    for model, anchor in zip(models, anchors):
        def distance(x):
            return (model(crops_of(x, [[FACE]], model.spec)) - anchor).norm().item()
        assert distance(with_anchor) < distance(without) and distance(with_anchor) < distance(image)
    with pytest.raises(ValueError, match="anchor_pool"):
        ProtectionObjective(models, [Branch()], "norm", 0.0, anchor_pool=pool[:1])


def test_pool_folder_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        pool_photos(tmp_path / "missing")
    (tmp_path / "one.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="at least 2"):
        pool_photos(tmp_path)


@pytest.mark.real
def test_a_real_pool_keys_the_cache_by_its_bytes(lfw_root, weight_cache, tmp_path):
    for name in ("Tony_Blair", "Colin_Powell", "Gloria_Macapagal_Arroyo"):
        shutil.copy(lfw_root / name / f"{name}_0001.jpg", tmp_path / f"{name}.jpg")
    pool = AnchorPool(tmp_path)
    assert len(pool.faces) == 3
    before = pool_digest(tmp_path)
    (tmp_path / "Tony_Blair.jpg").write_bytes((tmp_path / "Colin_Powell.jpg").read_bytes())
    assert pool_digest(tmp_path) != before


def test_ours_anchor_without_a_pool_says_what_it_needs():
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack

    with pytest.raises(ConfigError, match="anchor_pool"):
        build_attack(compose_attack("ours_anchor", ["attack.alpha=0"]), surrogates=[TinyFR(0)])
