"""Typed schemas of the Hydra config tree (``conf/``), registered with Hydra's ConfigStore.

Every group in ``conf/`` is validated against a dataclass here: a misspelt key or a value of
the wrong type fails at composition with Hydra's own message, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

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
class BranchConfig:
    kind: str = "identity"  # identity | gaussian | median | box
    kernel_size: int = 1
    sigma: float | None = None  # gaussian only; None: OpenCV's rule for the kernel size


@dataclass
class EOTFamilyConfig:
    name: str = "median_blur"  # a fr_shield.attacks.eot.EOT_FAMILIES name
    levels: list[Any] = field(default_factory=lambda: [None])


@dataclass
class EOTConfig:
    """Expectation over transformations, sampled each step (``fr_shield.attacks.eot``)."""

    samples: int = 2  # transforms drawn per step, added to the fixed branches
    # null: the study's blurs (median/box/gaussian k 3-11), JPEG 50-90 (differentiable), resize 1/2, 3/4
    families: list[EOTFamilyConfig] | None = None
    diversity_shrink: float = 0.9  # smallest shrink of input diversity (attack.input_diversity)
    seed: int = 0


@dataclass
class AttackConfig:
    """Which protection the protected identities' gallery photos receive (``none``: clean).

    Defaults are LowKey's reference settings (DESIGN.md section 2).
    """

    name: str = "none"
    surrogates: list[str] = field(default_factory=lambda: ["sface", "dlib_resnet", "facenet_casia"])
    branches: list[BranchConfig] = field(default_factory=lambda: [BranchConfig()])
    normaliser: str = "norm"  # norm: /|f| (LowKey's code); norm_squared: /|f|^2 (the study's "ours")
    optimiser: str = "signed"  # signed | adam
    steps: int = 50
    step_size: float = 0.0025
    init_noise: float = 0.005
    linf: float | None = None  # hard L-infinity bound; None: unbounded (LowKey's LPIPS variant)
    alpha: float = 0.05  # weight of the perceptual penalty (re-tune: ST-LPIPS, not AlexNet-LPIPS)
    lpips_backbone: str = "alex"
    faces: str = "all"  # all | first (LowKey protects only the first detected face)
    batch_size: int = 8
    seed: int = 0
    # Early stop: an image stops once every surrogate's embedding of every branch view is this far
    # past the model's match threshold (similarity units). None: all steps (the reference).
    stop_margin: float | None = None
    # Issue 7 settings; null (the default) leaves the attack as it was and out of the cache key.
    momentum: float | None = None  # MI-FGSM decay of the signed steps' accumulated gradient
    input_diversity: float | None = None  # probability of a random shrink-and-pad of each view's crop
    surrogate_weights: list[float] | None = None  # ensemble weighting, one per surrogate (mean 1)
    eot: EOTConfig | None = None  # sampled transform views each step
    mask: str | None = None  # "face": perturbation confined to a soft ellipse over each face
    # Hard per-face budget, enforced after the attack by bisection on the perturbation's scale
    # (fr_shield.attacks.budget): SSIM of each 112 x 112 face crop >= ssim_min, its ST-LPIPS <= lpips_max.
    ssim_min: float | None = None
    lpips_max: float | None = None


@dataclass
class BudgetPointConfig:
    """One point of a trade-off curve: the per-face budget enforced on the attack's output."""

    ssim_min: float | None = None
    lpips_max: float | None = None


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
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="data", name="data_schema", node=DatasetConfig)
    store.store(group="blur", name="blur_schema", node=BlurConfig)
    store.store(group="eval", name="eval_schema", node=EvalConfig)
    store.store(group="attack", name="attack_schema", node=AttackConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
