"""Build an attack from its typed config (``conf/attack/*.yaml``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fr_shield.attacks.attack import OptimiserSettings, ProtectionAttack
from fr_shield.attacks.objective import Branch, ProtectionObjective
from fr_shield.models import create
from fr_shield.perceptual import stlpips

# Settings that change what an attack produces: they key the cache of protected photos.
RESULT_KEYS = ("surrogates", "branches", "normaliser", "optimiser", "steps", "step_size",
               "init_noise", "linf", "alpha", "lpips_backbone", "faces", "seed")
# Later settings: keyed only when set, so photos protected before they existed stay valid.
OPTIONAL_RESULT_KEYS = ("stop_margin",)


def as_dict(config) -> dict:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)


def attack_key(config) -> str:
    """A short hash of everything that determines the protected photo."""
    values = as_dict(config)
    keyed = {k: values[k] for k in RESULT_KEYS}
    keyed.update({k: values[k] for k in OPTIONAL_RESULT_KEYS if values.get(k) is not None})
    return hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def build_attack(config, weights_dir: str | Path | None = None,
                 device: torch.device | str = "cpu", surrogates: list[torch.nn.Module] | None = None,
                 perceptual: torch.nn.Module | None = None) -> ProtectionAttack:
    values = as_dict(config)
    models = surrogates or [create(name, weights_dir, device) for name in values["surrogates"]]
    if perceptual is None and values["alpha"] > 0:
        perceptual = stlpips(values["lpips_backbone"], weights_dir).to(device)
    objective = ProtectionObjective(
        models, [Branch(**branch) for branch in values["branches"]], values["normaliser"], values["alpha"], perceptual
    )
    settings = OptimiserSettings(values["optimiser"], values["steps"], values["step_size"], values["init_noise"],
                                 values["linf"], values["seed"], values.get("stop_margin"))
    return ProtectionAttack(objective, settings)
