"""Typed configs of an attack and of a protection preset, and their Hydra composition.

``conf/attack/<name>.yaml`` is validated against ``AttackConfig`` and ``conf/preset/<name>.yaml``
against ``PresetConfig`` (which composes an attack config under ``attack``): a misspelt key or a
value of the wrong type fails at composition with Hydra's own message. The same typed object
travels from Hydra to the attack loop; nothing copies its fields into dicts on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from fr_shield.core.errors import ConfigError
from fr_shield.core.paths import conf_dir


@dataclass
class BranchConfig:
    kind: str = "identity"  # a differentiable transform of fr_shield.core.transforms: identity, gaussian, median, box
    kernel_size: int = 1
    sigma: float | None = None  # gaussian only; None: OpenCV's rule for the kernel size


@dataclass
class EOTFamilyConfig:
    name: str = "median_blur"  # a fr_shield.core.transforms name with a differentiable twin
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
    """One protection setting. Defaults are LowKey's reference settings (DESIGN.md section 2).

    ``name`` labels the setting (tables, sweeps); ``method`` picks the attack class from the
    registry (``fr_shield.attacks.registry``); ``optimiser`` picks the step rule
    (``fr_shield.attacks.steps``).
    """

    name: str = "none"
    method: str = "lowkey"
    surrogates: list[str] = field(default_factory=lambda: ["sface", "dlib_resnet", "facenet_casia"])
    branches: list[BranchConfig] = field(default_factory=lambda: [BranchConfig()])
    normaliser: str = "norm"  # norm: /|f| (LowKey's code); norm_squared: /|f|^2 (the study's "ours");
    # direction: the distance of unit embeddings (their length does not count)
    optimiser: str = "signed"  # a step rule: signed | adam
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
    momentum: float | None = None  # MI-FGSM decay of the signed steps' accumulated gradient
    input_diversity: float | None = None  # probability of a random shrink-and-pad of each view's crop
    surrogate_weights: list[float] | None = None  # ensemble weighting, one per surrogate (mean 1)
    feature_dropout: float | None = None  # DFANet dropout on the surrogates' conv outputs during the attack
    eot: EOTConfig | None = None  # sampled transform views each step
    mask: str | None = None  # "face": perturbation confined to a soft ellipse over each face
    # Put the budget where it is not seen (with mask: face): the per-pixel bound shrinks to this
    # fraction on flat skin and stays whole on texture (hair, brows, beard, edges); None: off.
    texture_floor: float | None = None
    # Put the budget where it is not seen, by a model of the eye (with mask: face): the per-pixel
    # bound is this multiple of the clean face's just-noticeable difference of brightness
    # (fr_shield.core.regions.jnd_map: about 4/255 on skin, more on dark hair, brows and edges),
    # capped by linf. SSIM and Delta E let a perturbation saturated at a flat 6/255 draw visible
    # mottled shading on 100 px faces; None: off.
    jnd_scale: float | None = None
    # Take the shading out: after every step the perturbation loses its local mean (a Gaussian of
    # this many pixels of the work image), so it cannot darken or lighten part of a face as a
    # whole -- the dark patches around eyes and cheeks that SSIM and Delta E let through at
    # 6/255. None: off.
    shading_sigma: float | None = None
    # "luma": one perturbation shared by R, G and B (brightness only: no coloured blotches);
    # None: each channel its own.
    colour: str | None = None
    # Hard per-face budget, enforced after the attack by bisection on the perturbation's scale
    # (fr_shield.attacks.budget): SSIM of each 112 x 112 face crop >= ssim_min, its ST-LPIPS <= lpips_max,
    # its mean Delta E <= delta_e_max (SSIM misses coloured blotches on smooth skin; Delta E sees them).
    ssim_min: float | None = None
    lpips_max: float | None = None
    delta_e_max: float | None = None  # mean CIE76 colour difference on each face crop (2.3: just noticeable)
    # SSIM of each face crop over its worst 5 % of windows (fr_shield.core.quality.ssim_worst): the
    # mean SSIM lets a few drawn lines or dark patches on flat skin through; the worst windows do not.
    ssim_worst_min: float | None = None
    # How visible each face crop's change is as structure or colour (fr_shield.core.quality.visibility:
    # oriented and blob contrast over the face's own texture, and colour patches, summed over the
    # face); lines, shading, mottling, darker eyebrows and pink or cyan patches that SSIM, ST-LPIPS
    # and a mean Delta E let through raise it. Changes start to show on a 100 px face at about 1.
    visibility_max: float | None = None
    # Also steer toward the budget during the optimisation (an adaptive per-image penalty on each
    # face's excess) instead of only scaling the finished perturbation down afterwards.
    budget_in_loop: bool = False
    # Speed (issue 14), off by default: the perceptual penalty on the aligned face crops only (not
    # on the whole work region as well), and a random subset of the branches each step.
    face_penalty_only: bool | None = None
    branches_per_step: int | None = None
    # Transfer and speed: a random subset of this many surrogates each step (issue 13, 2c); None: all.
    surrogates_per_step: int | None = None
    # Targeted identity shift: also pull each face toward the least similar face of this folder
    # of other people's photos (fr_shield.attacks.anchors), with this weight; None: off.
    anchor_pool: str | None = None
    anchor_weight: float | None = None
    # Feature-level objective: also push each surrogate's mid-level feature map (the convolution at
    # layer_depth of its convolutions) away from the clean one, with this weight; None: off.
    layer_weight: float | None = None
    layer_depth: float | None = None  # None: 0.5, the middle convolution
    # Skip gradient (issue 13, 2b): each surrogate's residual branches pass this fraction of the
    # gradient backward, so the step follows the shortcuts more (fr_shield.attacks.gradients); None: off.
    skip_gamma: float | None = None
    # Linear backward (LinBP, issue 13, 2b): the gradient passes each surrogate's rectifiers from
    # this fraction of a forward pass's rectifiers on as if they were the identity, the forward pass
    # unchanged (fr_shield.models.rectifiers; 0: all of them); None: off.
    linear_backward: float | None = None

    def __post_init__(self):
        if self.mask is not None and self.mask not in MASKS:
            raise ConfigError(f"unknown mask '{self.mask}'; choose one of: {', '.join(MASKS)} (or null)")
        if self.colour is not None and self.colour not in COLOURS:
            raise ConfigError(f"unknown colour '{self.colour}'; choose one of: {', '.join(COLOURS)} (or null: rgb)")
        # At least one; more than there are means all (a face attacked downscaled may lose blur
        # branches, and --surrogates may name fewer models than a preset's subset).
        for key in ("branches_per_step", "surrogates_per_step"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1 (or null: all), got {getattr(self, key)}")
        if self.surrogates_per_step is not None:
            if self.stop_margin is not None:
                raise ConfigError("surrogates_per_step and stop_margin do not go together: early stop needs "
                                  "every surrogate's margin each step")
        if self.init_noise == 0 and self.name != "none" and not self.moves_from_clean:  # none: no attack runs
            raise ConfigError("this attack cannot leave the clean photo: with init_noise 0 and only the identity "
                              "branch, its objective (a distance from the clean embedding) has no gradient there; "
                              "set init_noise > 0 (e.g. 0.005) or add a blur branch")
        if self.shading_sigma is not None and self.shading_sigma <= 0:
            raise ConfigError(f"shading_sigma is a Gaussian's width in pixels (> 0), got {self.shading_sigma}")
        if self.texture_floor is not None and (self.mask is None or not 0.0 < self.texture_floor <= 1.0):
            raise ConfigError(f"texture_floor is a fraction in (0, 1] of the face mask's bound (needs mask: face), "
                              f"got {self.texture_floor} with mask {self.mask}")
        if self.skip_gamma is not None and not 0.0 <= self.skip_gamma <= 1.0:
            raise ConfigError(f"skip_gamma is the fraction of the gradient residual branches pass, in [0, 1], "
                              f"got {self.skip_gamma}")
        if self.linear_backward is not None and not 0.0 <= self.linear_backward <= 1.0:
            raise ConfigError(f"linear_backward is the fraction of each surrogate's rectifiers after which the "
                              f"gradient passes them unchanged, in [0, 1], got {self.linear_backward}")
        if self.ssim_worst_min is not None and not -1.0 <= self.ssim_worst_min < 1.0:
            raise ConfigError(f"ssim_worst_min is an SSIM value in [-1, 1), got {self.ssim_worst_min}")
        if self.visibility_max is not None and self.visibility_max <= 0:
            raise ConfigError(f"visibility_max must be positive, got {self.visibility_max}")
        if self.jnd_scale is not None:
            if self.mask is None or self.jnd_scale <= 0:
                raise ConfigError(f"jnd_scale is a positive multiple of the just-noticeable difference (needs mask: "
                                  f"face), got {self.jnd_scale} with mask {self.mask}")
            if self.texture_floor is not None:
                raise ConfigError("jnd_scale and texture_floor both shape the bound: set one (the other null)")

    @property
    def moves_from_clean(self) -> bool:
        """Whether the objective has a gradient at the clean photo itself: a blurred view, a
        sampled transform, dropout or input diversity makes the surrogate see something else than
        the clean embedding was taken from, and an anchor pulls toward another face. Otherwise
        every term is a distance from the clean photo's own embedding or features, flat there."""
        return (any(branch.kind != "identity" for branch in self.branches) or self.eot is not None
                or bool(self.feature_dropout) or bool(self.input_diversity) or self.anchor_pool is not None)

    @property
    def has_budget(self) -> bool:
        return any(getattr(self, key) is not None for key in BUDGET_KEYS)


# Settings that cannot change a protected photo: left out of its cache key (fr_shield.attacks.registry.attack_key).
# ``name`` only labels a setting; ``batch_size`` groups photos into one forward pass, and the
# per-photo objective and step do not depend on the other photos of a batch.
NOT_IN_CACHE_KEY = ("name", "batch_size")
# Applied after the attack: photos that differ only in these share one attack's output.
BUDGET_KEYS = ("ssim_min", "lpips_max", "delta_e_max", "ssim_worst_min", "visibility_max")
MASKS = ("face",)
COLOURS = ("luma",)


@dataclass
class PresetConfig:
    """One protection level of ``fr-shield protect``: an attack setting and what it aims at."""

    name: str = "mid"
    attack: AttackConfig = field(default_factory=AttackConfig)
    target: str = ""  # the protection this preset aims at, in words (printed by --help and the report)


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(group="attack", name="attack_schema", node=AttackConfig)
    store.store(group="preset", name="preset_schema", node=PresetConfig)


def as_dict(config) -> dict:
    """Any form of an attack config (typed, DictConfig, dict) as a plain, resolved dict."""
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, DictConfig):
        config = OmegaConf.structured(config)
    return OmegaConf.to_container(config, resolve=True)


def to_attack_config(config) -> AttackConfig:
    """An attack config from Hydra (DictConfig), a dict or an ``AttackConfig``, validated and typed."""
    if isinstance(config, AttackConfig):
        return config
    merged = OmegaConf.merge(OmegaConf.structured(AttackConfig), config)
    return OmegaConf.to_object(merged)


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def attack_names() -> list[str]:
    """Every ``conf/attack`` option that protects (``none`` is the clean baseline)."""
    return [name for name in _names("attack") if name != "none"]


def preset_names() -> list[str]:
    return _names("preset")


def _compose(root: str | None, group: str, name: str, overrides: Sequence[str]) -> DictConfig:
    known = _names(group)
    if name not in known:
        raise ConfigError(f"unknown {group} '{name}'; choose one of: {', '.join(known)}")
    register_configs()
    if GlobalHydra.instance().is_initialized():  # a caller's own Hydra app or an earlier compose
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(root, overrides=[f"{group}={name}" if root else f"+{group}={name}", *overrides])


def compose_attack(name: str, overrides: Sequence[str] = ()) -> AttackConfig:
    """``conf/attack/<name>.yaml`` composed by Hydra, typed. ``overrides``: settings
    (``attack.steps=20``) or groups that write into the attack (``speed=fast``)."""
    extra = [item if "." in item.split("=", 1)[0] else f"+{item}" for item in overrides]
    return OmegaConf.to_object(_compose(None, "attack", name, extra).attack)


def compose_preset(name: str, attack: str | None = None, overrides: Sequence[str] = ()) -> PresetConfig:
    """``conf/preset/<name>.yaml`` (which composes an attack under ``attack``), typed.

    ``attack`` swaps the preset's attack for another ``conf/attack`` option; the preset's own
    strength (steps, bounds, budget) stays on top of it.
    """
    extra = []
    if attack is not None:
        if attack not in attack_names():
            raise ConfigError(f"unknown attack '{attack}'; choose one of: {', '.join(attack_names())}")
        extra.append(f"attack@preset.attack={attack}")
    return OmegaConf.to_object(_compose("protect", "preset", name, [*extra, *overrides]).preset)
