"""Typed schemas of the Hydra config tree (``conf/``), registered with Hydra's ConfigStore.

Every group in ``conf/`` is validated against a dataclass here: a misspelt key or a value of
the wrong type fails at composition with Hydra's own message, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from fr_shield.attacks.config import AttackConfig
from fr_shield.attacks.config import register_configs as register_attack_configs
from fr_shield.study.data import DataConfig


@dataclass
class DatasetConfig(DataConfig):
    pre_aligned: bool = False  # photos already are 112 x 112 ArcFace crops (Glint24): skip detection


@dataclass
class BlurConfig:
    """The operator's transform family (a name in ``fr_shield.core.transforms``) and its levels."""

    name: str = "none"
    levels: list[Any] = field(default_factory=lambda: [None])


@dataclass
class EvalConfig:
    models: list[str] = field(default_factory=lambda: ["sface", "dlib_resnet", "facenet_casia"])
    batch_size: int = 32
    ranks: list[int] = field(default_factory=lambda: [1, 5])


@dataclass
class BudgetPointConfig:
    """One point of a trade-off curve: the per-face budget enforced on the attack's output."""

    ssim_min: float | None = None
    lpips_max: float | None = None
    delta_e_max: float | None = None  # mean CIE76 colour difference on each face crop
    ssim_worst_min: float | None = None  # SSIM of each face crop's worst 5 % of windows
    visibility_max: float | None = None  # the face crop's change as structure (fr_shield.core.quality.visibility)


@dataclass
class TradeoffConfig:
    """Several budgets x several transforms in one job (``experiment=tradeoff``)."""

    budgets: list[BudgetPointConfig] = field(default_factory=lambda: [BudgetPointConfig()])
    transforms: list[BlurConfig] = field(default_factory=lambda: [BlurConfig()])
    clean_rows: bool = True  # also the unprotected photos under each transform (budget "clean")


@dataclass
class LoggerConfig:
    enabled: bool = True
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite file in the project
    experiment: str = "fr_shield"


@dataclass
class RunConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    device: str = "auto"
    weights_dir: str | None = None  # None: the weight store's default cache
    cache_dir: str | None = None  # faces and clean embeddings; None: ~/.cache/fr_shield
    progress: bool = True
    tradeoff: TradeoffConfig | None = None  # set: the job sweeps budgets x transforms (fr_shield.study.tradeoff)


def register_configs() -> None:
    register_attack_configs()
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="data", name="data_schema", node=DatasetConfig)
    store.store(group="blur", name="blur_schema", node=BlurConfig)
    store.store(group="eval", name="eval_schema", node=EvalConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
