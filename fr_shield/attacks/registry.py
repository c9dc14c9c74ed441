"""The attack registry: ``AttackConfig.method`` -> attack class, and the key of what an attack makes.

A new attack is one module holding a ``ProtectionAttack`` subclass marked ``@register_attack(name)``
(listed in ``ATTACK_MODULES`` below) plus one ``conf/attack/<name>.yaml`` with ``method: <name>``.
The class turns the typed config into its objective (``build_objective``); the base class owns the
loop, the bounds and the step rule.

``attack_key`` names a protected photo's cache folder: the hash of the whole resolved attack
config (less ``NOT_IN_CACHE_KEY``, settings that cannot change a photo) and of the SHA-256 of
every weight file the attack runs (surrogates and the perceptual metric). A new setting is keyed
the day it is added, with no list to update. Settings left unset (None: off) are left out, so a
new switch that defaults to None keeps every existing cache entry valid.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from functools import lru_cache
from pathlib import Path

import torch

from fr_shield.attacks.anchors import pool_digest
from fr_shield.attacks.attack import ATTACKS, ProtectionAttack
from fr_shield.attacks.config import BUDGET_KEYS, NOT_IN_CACHE_KEY, AttackConfig, as_dict, to_attack_config
from fr_shield.core.errors import ConfigError
from fr_shield.core.perceptual import stlpips
from fr_shield.core.quality import VISIBILITY_MODEL
from fr_shield.core.weights import WEIGHTS, sha256_of
from fr_shield.models import create, get_spec
from fr_shield.models.onnx_user import spec_path
from fr_shield.models.registry import ONNX_PREFIX, UnknownModel

# The modules that register attacks: importing them fills ``ATTACKS``.
ATTACK_MODULES = ("fr_shield.attacks.lowkey", "fr_shield.attacks.ours", "fr_shield.attacks.eot")


def attack_classes() -> dict[str, type[ProtectionAttack]]:
    for module in ATTACK_MODULES:
        importlib.import_module(module)
    return dict(ATTACKS)


def build_attack(config, weights_dir: str | Path | None = None, device: torch.device | str = "cpu",
                 surrogates: list[torch.nn.Module] | None = None,
                 perceptual: torch.nn.Module | None = None) -> ProtectionAttack:
    """The attack ``config`` asks for; ``surrogates`` / ``perceptual`` replace the named networks
    (tests pass tiny ones; a borrowed GPU passes copies it loaded itself)."""
    config = to_attack_config(config)
    classes = attack_classes()
    if config.method not in classes:
        raise ConfigError(f"unknown attack method '{config.method}'; choose one of: {', '.join(classes)}")
    models = surrogates or [create(name, weights_dir, device) for name in config.surrogates]
    if perceptual is None and config.alpha > 0:
        perceptual = stlpips(config.lpips_backbone, weights_dir).to(device)
    return classes[config.method].from_config(config, models, perceptual)


@lru_cache(maxsize=64)
def _file_digest(path: str, stamp: int) -> str:
    return sha256_of(Path(path))


def _weights_of(model: str) -> list[str]:
    """SHA-256 of the files behind one model name (a user's ONNX file and its spec, or pinned weights)."""
    if model.startswith(ONNX_PREFIX):
        files = [Path(model[len(ONNX_PREFIX):]).expanduser()]
        files.append(spec_path(files[0]))
        return [_file_digest(str(f), f.stat().st_mtime_ns) if f.is_file() else "absent" for f in files]
    try:
        spec = get_spec(model)
    except UnknownModel:  # a network handed in by the caller (tests' tiny ones): keyed by its name alone
        return ["not in the registry"]
    return [WEIGHTS[name].sha256 for name in spec.weights]


def attack_key(config, with_budget: bool = True) -> str:
    """A short hash of everything that determines the protected photo (``with_budget=False``: of
    the attack's own output, before the per-face budget scales it)."""
    config = to_attack_config(config)
    values = {k: v for k, v in as_dict(config).items() if k not in NOT_IN_CACHE_KEY and v is not None}
    # An unset budget and no budget are one thing: the attack's own output (which depends on the
    # budget only when the attack optimises inside it).
    with_budget = with_budget or config.budget_in_loop
    values = {k: v for k, v in values.items() if k not in BUDGET_KEYS or with_budget}
    if "visibility_max" in values:  # the limit means what the model of the eye it bounds means
        values["visibility_model"] = VISIBILITY_MODEL
    weights = {model: _weights_of(model) for model in config.surrogates}
    if config.alpha > 0:
        weights["perceptual"] = [WEIGHTS[f"stlpips_{config.lpips_backbone}"].sha256]
    if config.anchor_pool is not None:
        weights["anchor_pool"] = [pool_digest(config.anchor_pool)]
    text = json.dumps({"attack": values, "weights": weights}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


__all__ = ["AttackConfig", "attack_classes", "attack_key", "build_attack"]
