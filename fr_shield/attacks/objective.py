"""The protection objective: move every surrogate's embedding far from the clean one.

    maximise  1/(b n) sum_branches sum_models |f(A(x)) - f(A(T_b(x')))|^2 / |f(A(x))|^p
              - alpha * LPIPS(x, x')

Branches T_b act on the full photo before alignment (LowKey's Gaussian branch: kernel 7,
sigma 3); the clean targets f(A(x)) are computed once, unsmoothed, and serve every branch.
p = 1 ("norm", LowKey's code) or p = 2 ("norm_squared", as the study's slide writes "ours").
"direction" compares unit embeddings, |f/|f| - f0/|f0||^2 = 2 - 2 cos: the same as
"norm_squared" for a network whose embeddings have one length, but for the raw embeddings our
surrogates give, the length they gain or lose, which no matcher here looks at (each compares by
cosine or by the distance of unit vectors), no longer counts as progress.
LPIPS is the mean of ST-LPIPS on the face crops and on the full photo (``face_penalty_only``: on
the face crops alone, a fifth of the pixels of an LFW-size region).

Work done once per attack, not per step (``targets``): the clean embeddings and the perceptual
metric's features of the clean face crops and photos. Each step stacks every branch's view into
one batch per surrogate, so a model runs one forward and one backward pass per step
(``branches_per_step`` / ``surrogates_per_step``: a random subset of the branches / surrogates
each step, drawn from a seeded generator: fewer passes, and a differently composed ensemble each step).
The in-loop budget reuses the step's aligned face crops and their ST-LPIPS. Networks and
their inputs use the channels-last layout: ST-LPIPS's stride-1 convolutions, the bulk of a step's
FLOPs, ran 1.6x faster that way on a 2-core CPU (the FR models 1.1-1.3x).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fr_shield.attacks.anchors import choose_anchors
from fr_shield.attacks.gradients import skip_gradient_hooks
from fr_shield.core import transforms
from fr_shield.core.align import FACE_CROP, align_faces
from fr_shield.core.quality import delta_e, ssim, ssim_worst, visibility
from fr_shield.models.onnx_graph import OnnxConv
from fr_shield.models.rectifiers import count_rectifiers, linear_backward
from fr_shield.models.spec import ModelSpec, pair_similarity

NORMALISER_POWER = {"norm": 1, "norm_squared": 2, "direction": 0}  # "direction": of unit embeddings
# Feature dropout should attack a nearby network, not a different one: a dropped surrogate still
# embeds the clean face at least this close to its clean embedding (cosine), or its rate is lowered.
DROPOUT_MIN_SIMILARITY = 0.6

Faces = list[list[np.ndarray]]  # per image, the 5 x 2 landmarks of each protected face


@dataclass(frozen=True)
class InLoopBudget:
    """The per-face limits the loop steers toward while it optimises (None: no limit)."""

    ssim_min: float | None = None
    lpips_max: float | None = None
    delta_e_max: float | None = None
    ssim_worst_min: float | None = None
    visibility_max: float | None = None
    grow: float = 2.0  # a violating image's penalty weight doubles each step...
    shrink: float = 0.9  # ...and relaxes while it is inside the budget


@dataclass(frozen=True)
class Branch:
    """One view of the protected photo the surrogates must fail on."""

    kind: str = "identity"  # a differentiable transform of fr_shield.core.transforms (identity, gaussian, median, ...)
    kernel_size: int = 1  # its level (a kernel size for the blurs)
    sigma: float | None = None  # gaussian only; None: OpenCV's rule for the kernel size

    def __post_init__(self):
        transform = self.transform  # raises for an unknown name
        if transform.differentiable is None:
            raise ValueError(f"branch '{self.kind}' has no differentiable twin; use one of "
                             f"{', '.join(t.short for t in transforms.TRANSFORMS.values() if t.differentiable)}")
        if self.sigma is not None and transform.name != "gaussian_blur2d":
            raise ValueError(f"sigma is a setting of the gaussian branch, not of '{self.kind}'")

    @property
    def transform(self) -> transforms.Transform:
        return transforms.get(self.kind)

    @property
    def reach(self) -> int:
        return self.transform.reach(self.kernel_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        transform = self.transform
        if transform.name == "none":
            return images
        if self.sigma is not None:
            return transform.differentiable(images, self.kernel_size, self.sigma)
        return transform.differentiable(images, self.kernel_size)


def crops_of(images: torch.Tensor, faces: Faces, spec: ModelSpec) -> torch.Tensor:
    """Every face of every image aligned for ``spec``: [total faces, 3, h, w]."""
    crops = torch.cat([align_faces(images[i], faces[i], spec) for i in range(len(faces))])
    return crops.contiguous(memory_format=torch.channels_last)


def convolutions(model: nn.Module) -> list[nn.Module]:
    """``model``'s convolutions in the order it holds them: ``nn.Conv2d`` layers and the Conv nodes
    of an interpreted ONNX graph (``OnnxConv``), which forward hooks reach alike."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, OnnxConv))]


def mid_layer(model: nn.Module, depth: float) -> nn.Module:
    """The convolution at fraction ``depth`` of ``model``'s convolutions: a mid-level feature map,
    where face models share more than in their embeddings."""
    layers = convolutions(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no convolution to take a mid-level feature map from")
    return layers[round(depth * (len(layers) - 1))]


def face_weights(faces: Faces, device: torch.device) -> torch.Tensor:
    """1 / (faces in its image) per face: each image weighs the same whatever its face count."""
    return torch.cat([torch.full((len(f),), 1.0 / max(len(f), 1), device=device) for f in faces])


def face_images(faces: Faces, device: torch.device) -> torch.Tensor:
    """The image index of every face, in the order ``crops_of`` stacks them."""
    return torch.cat([torch.full((len(f),), i, device=device) for i, f in enumerate(faces)]).long()


@dataclass(frozen=True)
class Targets:
    """What the objective needs of the clean photos, computed once per attack."""

    embeddings: list[torch.Tensor]  # per surrogate: f_i(A(x)) of every face [faces, D]
    face_features: list[torch.Tensor] | None = None  # perceptual features of the clean face crops
    photo_features: list[torch.Tensor] | None = None  # ... and of the clean photos
    anchors: list[torch.Tensor] | None = None  # per surrogate: the anchor identity's embedding per face
    layers: list[torch.Tensor] | None = None  # per surrogate: its mid-level feature map of every face
    dropout_rates: list[float] | None = None  # per surrogate: the feature dropout's rate for these faces

    def select(self, keep: list[int], faces: Faces) -> Targets:
        """The targets of images ``keep`` only (``faces``: every image's faces, before selection)."""
        image_of_face = face_images(faces, self.embeddings[0].device)
        on_face = torch.isin(image_of_face, torch.as_tensor(keep, device=image_of_face.device))
        index = torch.as_tensor(keep, device=image_of_face.device)

        def pick(features, mask_or_index):
            return None if features is None else [f[mask_or_index] for f in features]

        return replace(self, embeddings=[e[on_face] for e in self.embeddings],
                       face_features=pick(self.face_features, on_face), photo_features=pick(self.photo_features, index),
                       anchors=pick(self.anchors, on_face), layers=pick(self.layers, on_face))


class ProtectionObjective(nn.Module):
    def __init__(self, surrogates: list[nn.Module], branches: list[Branch], normaliser: str = "norm",
                 alpha: float = 0.05, perceptual: nn.Module | None = None,
                 surrogate_weights: list[float] | None = None, feature_dropout: float = 0.0, seed: int = 0,
                 face_penalty_only: bool = False, branches_per_step: int | None = None,
                 anchor_pool: list[torch.Tensor] | None = None, anchor_weight: float = 1.0,
                 surrogates_per_step: int | None = None, layer_weight: float = 0.0, layer_depth: float = 0.5,
                 skip_gamma: float = 1.0, linear_backward: float | None = None):
        """``surrogate_weights``: ensemble weighting, one weight >= 0 per surrogate, rescaled to mean 1
        (None: every model weighs the same, LowKey's plain average). ``feature_dropout``: DFANet's
        dropout on every convolution's output of every surrogate during the attack's steps (0: off;
        the clean targets are always computed without it), drawn from a generator seeded by ``seed``.
        ``face_penalty_only``: the perceptual penalty on the face crops only, not on the photo.
        ``branches_per_step`` / ``surrogates_per_step``: that many branches / surrogates, drawn anew
        each step (None, or more than there are: all).
        ``anchor_pool``: per surrogate, the embeddings of a pool of other people's faces; each face
        is also pulled toward its anchor (``fr_shield.attacks.anchors``), weighted by ``anchor_weight``.
        ``layer_weight``: also push each surrogate's mid-level feature map (the output of the
        convolution at ``layer_depth`` of its convolutions) away from the clean one, relative to
        its size, with this weight (0: off).
        ``skip_gamma``: the gradient through every residual branch of every surrogate is scaled by
        this (skip gradient, ``fr_shield.attacks.gradients``; 1: off).
        ``linear_backward``: the gradient passes every surrogate's rectifiers from this fraction of
        them on as the identity's (LinBP, ``fr_shield.models.rectifiers``; None: off)."""
        super().__init__()
        if normaliser not in NORMALISER_POWER:
            raise ValueError(f"unknown normaliser '{normaliser}'; use {', '.join(NORMALISER_POWER)}")
        if not surrogates or not branches:
            raise ValueError("the objective needs at least one surrogate model and one branch")
        self.surrogates = nn.ModuleList(surrogates).to(memory_format=torch.channels_last)
        self.branches = list(branches)
        self.power = NORMALISER_POWER[normaliser]
        self.normaliser = normaliser
        self.alpha = alpha
        self.perceptual = perceptual if perceptual is None else perceptual.to(memory_format=torch.channels_last)
        self.surrogate_weights = None
        if surrogate_weights is not None:
            weights = [float(w) for w in surrogate_weights]
            if len(weights) != len(surrogates) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"surrogate_weights needs one weight >= 0 per surrogate ({len(surrogates)}), "
                                 f"not all zero; got {surrogate_weights}")
            self.surrogate_weights = [w * len(weights) / sum(weights) for w in weights]
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError(f"feature_dropout is a probability in [0, 1), got {feature_dropout}")
        self.feature_dropout = feature_dropout
        self.dropout_seed = seed
        self.dropout_generator = torch.Generator(device="cpu").manual_seed(seed)
        for name, count in (("branches_per_step", branches_per_step), ("surrogates_per_step", surrogates_per_step)):
            if count is not None and count < 1:
                raise ValueError(f"{name} must be at least 1 (None: all; more than there are: all), got {count}")
        self.branches_per_step = branches_per_step
        self.surrogates_per_step = surrogates_per_step
        self.sample_generator = torch.Generator(device="cpu").manual_seed(seed)
        self.face_penalty_only = face_penalty_only
        if anchor_pool is not None and len(anchor_pool) != len(surrogates):
            raise ValueError(f"anchor_pool needs one embedding matrix per surrogate ({len(surrogates)})")
        self.anchor_pool = anchor_pool
        self.anchor_weight = anchor_weight
        if layer_weight < 0 or not 0.0 <= layer_depth <= 1.0:
            raise ValueError(f"layer_weight must be >= 0 and layer_depth in [0, 1], got {layer_weight}, {layer_depth}")
        self.layer_weight = layer_weight
        self.layers = [mid_layer(model, layer_depth) for model in surrogates] if layer_weight > 0 else None
        if not 0.0 <= skip_gamma <= 1.0:
            raise ValueError(f"skip_gamma scales residual branches' gradients: in [0, 1], got {skip_gamma}")
        self.skip_gamma = skip_gamma
        if linear_backward is not None and not 0.0 <= linear_backward <= 1.0:
            raise ValueError(f"linear_backward is a fraction of the rectifiers in [0, 1], got {linear_backward}")
        self.linear_backward = linear_backward
        self.rectifier_totals: dict[int, int] = {}  # per surrogate (id): rectifiers in one forward pass

    @property
    def reach(self) -> int:
        """The widest kernel (px) any view applies: how far outside a face crop pixels matter."""
        return max(branch.reach for branch in self.branches)

    def step_branches(self) -> list[Branch]:
        """The branches of this step: all of them, or ``branches_per_step`` of them. The identity
        branch (the photo as posted) is in every step; the others are drawn without replacement:
        drawing the identity view too left the unblurred photo 3-4 probes (of 20) easier for
        held-out models to match (experiments/RESULTS.md, "Speed of fr-shield protect")."""
        count = self.branches_per_step
        if count is None or count >= len(self.branches):
            return self.branches
        kept = [i for i, branch in enumerate(self.branches) if branch.transform.name == "none"][:1]
        others = [i for i in range(len(self.branches)) if i not in kept]
        drawn = [others[i] for i in self._subset(len(others), max(0, count - len(kept)))]
        return [self.branches[i] for i in sorted(kept + drawn)]

    def step_surrogates(self) -> list[int]:
        """The surrogates (their indices) of this step: all, or ``surrogates_per_step`` drawn."""
        return self._subset(len(self.surrogates), self.surrogates_per_step)

    def _subset(self, total: int, count: int | None) -> list[int]:
        if count is None or count >= total:
            return list(range(total))
        return sorted(torch.randperm(total, generator=self.sample_generator)[:count].tolist())

    def views(self, adversarial: torch.Tensor) -> list[torch.Tensor]:
        """The views of the photo every surrogate must fail on (one per branch; EOT adds sampled ones)."""
        return [branch(adversarial) for branch in self.step_branches()]

    def model_input(self, crops: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The aligned crops as the surrogate sees them (identity; input diversity overrides it)."""
        return crops

    def _cached_features(self) -> bool:
        """A metric with ``features`` / ``distance_from_features`` (ST-LPIPS) lets the clean side be cached."""
        return self.alpha > 0 and hasattr(self.perceptual, "features") and hasattr(self.perceptual, "distance_from_features")

    def surrogate(self, model: nn.Module, crops: torch.Tensor, layer: nn.Module | None = None,
                  dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One surrogate's embeddings of the attacked crops, and the output of its ``layer`` (None
        without one). With ``dropout`` > 0, every convolution's output loses that random fraction of
        its values (rescaled by 1 / (1 - p)), a fresh draw each call, so each step attacks a
        slightly different network (DFANet: Zhong and Deng, IEEE TIFS 2021)."""
        backward = nullcontext()
        if self.linear_backward is not None and torch.is_grad_enabled():
            if id(model) not in self.rectifier_totals:
                self.rectifier_totals[id(model)] = count_rectifiers(model, crops[:1])
            backward = linear_backward(self.linear_backward, self.rectifier_totals[id(model)])
        hooks, seen = [], []
        if dropout > 0:
            keep = 1.0 - dropout

            def drop(module, inputs, output):
                mask = torch.rand(output.shape, generator=self.dropout_generator) < keep
                return output * mask.to(device=output.device, dtype=output.dtype) / keep

            hooks = [m.register_forward_hook(drop) for m in convolutions(model)]
        if self.skip_gamma < 1.0 and torch.is_grad_enabled():
            hooks += skip_gradient_hooks(model, self.skip_gamma)
        if layer is not None:  # after the dropout hooks: it sees the map the next layer sees
            hooks.append(layer.register_forward_hook(lambda module, inputs, output: seen.append(output)))
        try:
            with backward:
                return model(crops), (seen[-1] if seen else None)
        finally:
            for hook in hooks:
                hook.remove()

    def dropout_rate(self, model: nn.Module, crops: torch.Tensor, clean: torch.Tensor) -> float:
        """The largest of ``feature_dropout`` / 2^k (k = 0..3) at which ``model``, dropped, still
        embeds the clean ``crops`` near ``clean`` (mean cosine >= DROPOUT_MIN_SIMILARITY); 0 if none.
        The same rate at every convolution is a mild change to a ResNet (dlib: cosine 0.91 at
        p = 0.1) but compounds through a MobileFaceNet's many thin layers (0.05 at p = 0.1): a
        network that no longer knows the face, whose gradient carries no identity."""
        rate = self.feature_dropout
        for _ in range(4):
            embedding, _ = self.surrogate(model, crops, dropout=rate)
            if F.cosine_similarity(embedding, clean, dim=1).mean() >= DROPOUT_MIN_SIMILARITY:
                return rate
            rate /= 2
        return 0.0

    @torch.no_grad()
    def targets(self, images: torch.Tensor, faces: Faces) -> Targets:
        """Clean embeddings f_i(A(x)) of every face, once, without smoothing (and clean LPIPS features)."""
        self.dropout_generator.manual_seed(self.dropout_seed)  # the same draws for the same attack
        self.sample_generator.manual_seed(self.dropout_seed)
        embeddings, layers = [], []
        for number, model in enumerate(self.surrogates):
            crops = crops_of(images, faces, model.spec)
            if self.layers is None:
                embeddings.append(model(crops))
                continue
            seen = []
            hook = self.layers[number].register_forward_hook(lambda module, inputs, output: seen.append(output))
            try:
                embeddings.append(model(crops))
            finally:
                hook.remove()
            layers.append(seen[-1])
        layers = layers or None
        rates = None
        if self.feature_dropout > 0:
            rates = [self.dropout_rate(model, crops_of(images, faces, model.spec), clean)
                     for model, clean in zip(self.surrogates, embeddings)]
        anchors = None if self.anchor_pool is None else choose_anchors(embeddings, self.anchor_pool, list(self.surrogates))
        if not self._cached_features():
            return Targets(embeddings, anchors=anchors, layers=layers, dropout_rates=rates)
        photo_features = None if self.face_penalty_only else self.perceptual.features(
            images.contiguous(memory_format=torch.channels_last))
        return Targets(embeddings, self.perceptual.features(crops_of(images, faces, FACE_CROP)), photo_features, anchors,
                       layers, rates)

    def feature_term(self, adversarial: torch.Tensor, faces: Faces,
                     targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: the normalised squared embedding shift, averaged over branches, models, faces;
        and the margin by which the least-moved (face, model, branch) embedding is past the
        model's match threshold (> 0: no surrogate matches any view of any face)."""
        device = adversarial.device
        weights, image_of_face = face_weights(faces, device), face_images(faces, device)
        # Every branch's view in one batch: one forward (and backward) per surrogate per step.
        view_list = self.views(adversarial)
        n_branches = len(view_list)
        views = torch.cat(view_list)
        total = adversarial.new_zeros(len(faces))
        face_margin = torch.full((len(weights),), float("inf"), device=device)
        chosen = self.step_surrogates()
        for number in chosen:
            model, target = self.surrogates[number], targets.embeddings[number]
            crops = self.model_input(crops_of(views, faces * n_branches, model.spec), model)
            layer = None if self.layers is None else self.layers[number]
            rate = 0.0 if targets.dropout_rates is None else targets.dropout_rates[number]
            embedding, layer_map = self.surrogate(model, crops, layer, rate)
            embedding = embedding.reshape(n_branches, *target.shape)
            attacked, reference = embedding, target
            toward = None if targets.anchors is None else targets.anchors[number]
            if self.normaliser == "direction":  # the raw embeddings still give the match margin below
                attacked, reference = F.normalize(embedding, dim=-1), F.normalize(target, dim=-1)
                toward = None if toward is None else F.normalize(toward, dim=-1)
            shift = (attacked - reference).pow(2).sum(dim=2).sum(dim=0)
            if toward is not None:  # away from the clean face and toward the anchor face
                shift = shift - self.anchor_weight * (attacked - toward).pow(2).sum(dim=2).sum(dim=0)
            per_face = shift / reference.norm(dim=1).pow(self.power)
            if layer_map is not None:  # the mid-level map's shift, relative to the clean map's size
                clean_map = targets.layers[number].flatten(1)
                moved = (layer_map.reshape(n_branches, *clean_map.shape) - clean_map).pow(2).sum(dim=2).sum(dim=0)
                per_face = per_face + self.layer_weight * moved / clean_map.pow(2).sum(dim=1).clamp_min(1e-12)
            per_face = per_face * weights
            if self.surrogate_weights is not None:
                per_face = per_face * self.surrogate_weights[number]
            total = total.index_add(0, image_of_face, per_face)
            with torch.no_grad():
                gap = model.spec.threshold - pair_similarity(embedding, target, model.spec)
                face_margin = torch.minimum(face_margin, gap.amin(dim=0))
        margin = torch.full((len(faces),), float("inf"), device=device)
        margin = margin.scatter_reduce(0, image_of_face, face_margin, reduce="amin")
        return total / (n_branches * len(chosen)), margin

    def face_lpips(self, crops: torch.Tensor, clean: torch.Tensor, faces: Faces,
                   targets: Targets | None = None) -> torch.Tensor:
        """ST-LPIPS of every attacked face crop (``crops``: [faces, 3, 112, 112]) from its clean crop."""
        metric = self.perceptual
        if targets is not None and targets.face_features is not None:
            return metric.distance_from_features(targets.face_features, metric.features(crops))
        return metric(crops_of(clean, faces, FACE_CROP), crops)

    def perceptual_term(self, adversarial: torch.Tensor, clean: torch.Tensor, faces: Faces,
                        targets: Targets | None = None, photo_weights: torch.Tensor | None = None,
                        on_faces: torch.Tensor | None = None) -> torch.Tensor:
        """Per image: mean of LPIPS on its face crops (averaged) and on the full photo (with
        ``face_penalty_only``: on its face crops only).

        ``photo_weights`` scales the full-photo part per image: a region cut out of a larger photo
        stands for that photo (see ``fr_shield.attacks.protector``). ``on_faces``: the face crops'
        LPIPS when the caller has it already.
        """
        if self.perceptual is None or self.alpha == 0:
            return adversarial.new_zeros(len(faces))
        weights, image_of_face = face_weights(faces, adversarial.device), face_images(faces, adversarial.device)
        if on_faces is None:
            on_faces = self.face_lpips(crops_of(adversarial, faces, FACE_CROP), clean, faces, targets)
        face_mean = adversarial.new_zeros(len(faces)).index_add(0, image_of_face, on_faces * weights)
        if self.face_penalty_only:
            return face_mean
        if targets is not None and targets.photo_features is not None:
            metric = self.perceptual
            on_photo = metric.distance_from_features(
                targets.photo_features, metric.features(adversarial.contiguous(memory_format=torch.channels_last)))
        else:
            on_photo = self.perceptual(clean, adversarial)
        if photo_weights is not None:
            on_photo = on_photo * photo_weights
        return 0.5 * (face_mean + on_photo)

    def budget_excess(self, adversarial: torch.Tensor, clean: torch.Tensor, faces: Faces,
                      budget: InLoopBudget, crops: torch.Tensor | None = None,
                      on_faces: torch.Tensor | None = None) -> torch.Tensor:
        """Per image, differentiable: how far its faces are outside the per-face budget (0 inside),
        each limit's excess relative to its room (e.g. (s - SSIM) / (1 - s)), summed over faces.
        ``crops`` / ``on_faces``: the attacked face crops and their LPIPS, when already computed."""
        clean_crops = crops_of(clean, faces, FACE_CROP)
        crops = crops if crops is not None else crops_of(adversarial, faces, FACE_CROP)
        excess = adversarial.new_zeros(len(crops))
        if budget.ssim_min is not None:
            excess = excess + torch.relu(budget.ssim_min - ssim(clean_crops, crops)) / (1 - budget.ssim_min)
        if budget.lpips_max is not None and self.perceptual is not None:
            on_faces = on_faces if on_faces is not None else self.perceptual(clean_crops, crops)
            excess = excess + torch.relu(on_faces - budget.lpips_max) / budget.lpips_max
        if budget.delta_e_max is not None:
            excess = excess + torch.relu(delta_e(clean_crops, crops)[0] - budget.delta_e_max) / budget.delta_e_max
        if budget.ssim_worst_min is not None:
            worst = ssim_worst(clean_crops, crops)
            excess = excess + torch.relu(budget.ssim_worst_min - worst) / (1 - budget.ssim_worst_min)
        if budget.visibility_max is not None:
            visible = visibility(clean_crops, crops)
            excess = excess + torch.relu(visible - budget.visibility_max) / budget.visibility_max
        return adversarial.new_zeros(len(faces)).index_add(0, face_images(faces, adversarial.device), excess)

    def forward(self, adversarial: torch.Tensor, clean: torch.Tensor, faces: Faces, targets: Targets,
                photo_weights: torch.Tensor | None = None,
                budget: InLoopBudget | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-image objective [B] (to maximise) and its parts; with ``budget``, parts["excess"] is
        the differentiable budget excess (``budget_excess``), sharing the step's face crops and LPIPS."""
        features, margin = self.feature_term(adversarial, faces, targets)
        with_penalty = self.perceptual is not None and self.alpha > 0
        crops = on_faces = None
        if with_penalty or budget is not None:
            crops = crops_of(adversarial, faces, FACE_CROP)
        if with_penalty:
            on_faces = self.face_lpips(crops, clean, faces, targets)
        perceptual = self.perceptual_term(adversarial, clean, faces, targets, photo_weights, on_faces)
        parts = {"features": features.detach(), "lpips": perceptual.detach(), "margin": margin}
        if budget is not None:
            parts["excess"] = self.budget_excess(adversarial, clean, faces, budget, crops, on_faces)
        return features - self.alpha * perceptual, parts
