"""Build an attack from its typed config (``conf/attack/*.yaml``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fr_shield.attacks.attack import OptimiserSettings, ProtectionAttack
from fr_shield.attacks.eot import EOTObjective, EOTSettings, families_from_config
from fr_shield.attacks.objective import Branch, ProtectionObjective
from fr_shield.core.perceptual import stlpips
from fr_shield.models import create

# Settings that change what an attack produces: they key the cache of protected photos.
RESULT_KEYS = ("surrogates", "branches", "normaliser", "optimiser", "steps", "step_size",
               "init_noise", "linf", "alpha", "lpips_backbone", "faces", "seed")
# Later settings: keyed only when set, so photos protected before they existed stay valid.
OPTIONAL_RESULT_KEYS = ("stop_margin", "momentum", "input_diversity", "surrogate_weights", "eot", "mask",
                        "ssim_min", "lpips_max")
# Applied after the attack (fr_shield.attacks.budget): photos that differ only in these share one attack.
BUDGET_KEYS = ("ssim_min", "lpips_max")
MASKS = ("face",)


def as_dict(config) -> dict:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)


def compose_attack(name: str, overrides: Sequence[str] = ()) -> dict:
    """``conf/attack/<name>.yaml`` composed by Hydra against its typed schema, with ``overrides``
    (e.g. ``speed=fast``), as a plain dict: for tools that build an attack outside ``fr_shield.study.job``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fr_shield.core.paths import conf_dir
    from fr_shield.study.config import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():  # a caller's own Hydra app or an earlier compose
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return as_dict(compose("config", overrides=[f"attack={name}", "logger=none", *overrides]).attack)


def attack_key(config, with_budget: bool = True) -> str:
    """A short hash of everything that determines the protected photo (``with_budget=False``: of
    the attack's own output, before the per-face budget scales it)."""
    values = as_dict(config)
    keyed = {k: values[k] for k in RESULT_KEYS}
    optional = [k for k in OPTIONAL_RESULT_KEYS if with_budget or k not in BUDGET_KEYS]
    keyed.update({k: values[k] for k in optional if values.get(k) is not None})
    return hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def has_budget(config) -> bool:
    values = as_dict(config)
    return any(values.get(k) is not None for k in BUDGET_KEYS)


def build_attack(config, weights_dir: str | Path | None = None,
                 device: torch.device | str = "cpu", surrogates: list[torch.nn.Module] | None = None,
                 perceptual: torch.nn.Module | None = None) -> ProtectionAttack:
    values = as_dict(config)
    if values.get("mask") is not None and values["mask"] not in MASKS:
        raise ValueError(f"unknown mask '{values['mask']}'; use {', '.join(MASKS)} or null")
    models = surrogates or [create(name, weights_dir, device) for name in values["surrogates"]]
    if perceptual is None and values["alpha"] > 0:
        perceptual = stlpips(values["lpips_backbone"], weights_dir).to(device)
    branches = [Branch(**branch) for branch in values["branches"]]
    common = (models, branches, values["normaliser"], values["alpha"], perceptual, values.get("surrogate_weights"))
    eot, diversity = values.get("eot"), values.get("input_diversity")
    if eot is not None or diversity is not None:
        eot = eot or {"samples": 0}
        objective = EOTObjective(*common, eot=EOTSettings(
            families_from_config(eot.get("families")), eot.get("samples", 2), float(diversity or 0.0),
            eot.get("diversity_shrink", 0.9), eot.get("seed", 0)))
    else:
        objective = ProtectionObjective(*common)
    settings = OptimiserSettings(values["optimiser"], values["steps"], values["step_size"], values["init_noise"],
                                 values["linf"], values["seed"], values.get("stop_margin"), values.get("momentum"))
    attack = ProtectionAttack(objective, settings)
    if values.get("mask") == "face":
        from fr_shield.attacks.masking import FaceMaskAttack

        attack = FaceMaskAttack(attack)
    return attack
