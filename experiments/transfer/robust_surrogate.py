"""A slightly robust surrogate (issue 13): fine-tune a MobileFaceNet so that small perturbations
move its embedding little, while it keeps its own clean embedding.

Springer, Mitchell and Kenyon ("A Little Robustness Goes a Long Way: Leveraging Robust Features
for Targeted Transfer Attacks", NeurIPS 2021) found that attacks made on a surrogate trained to be
robust at a *small* radius transfer far better than attacks on the plain network: its gradient
follows features other networks share. Fawkes (Shan et al., USENIX Security 2020) likewise
cloaks with a robustly fine-tuned feature extractor. This is the face-embedding version, without
labels: a student starts as ``mobilefacenet_fp`` and is trained, against the frozen original
(the teacher), on

    (1 - cos(s(x), t(x)))  +  beta * (1 - cos(s(x + d), t(x))),   d = PGD on s within L-inf eps,

the adversarial term of TRADES (Zhang et al., ICML 2019) in embedding space, anchored to the
teacher's clean embedding so the student stays the same face recogniser. Training photos: LFW
people outside the transfer split (``conf/experiment/transfer.yaml``: never a protected or a
distractor identity), aligned by fr_shield's detector. The result is written as an ONNX file
(the original graph, the trained weights) with a spec beside it, so it plugs in anywhere as
``onnx:<path>``: a study surrogate, never shipped (its teacher's licence is MIT, but it is
fitted on LFW, which is offered for research).

    python experiments/transfer/robust_surrogate.py --out runs/robust --minutes 30
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper
from torch.nn import functional as F

from fr_shield.core import weights
from fr_shield.core.align import align_faces
from fr_shield.core.detect import FaceDetector, central_face
from fr_shield.core.imageio import load_rgb
from fr_shield.core.paths import data_root
from fr_shield.models import registry
from fr_shield.models.mobilefacenet_fp import MEAN, STD, SPEC, load_graph
from fr_shield.models.onnx_graph import OnnxModule
from fr_shield.study.data import DataConfig, load_split, scan_identities


def training_crops(count: int, seed: int, cache: Path) -> torch.Tensor:
    """``count`` aligned 112 x 112 crops (uint8) of LFW photos of people outside the transfer split."""
    if cache.is_file():
        return torch.load(cache)
    root = data_root() / "lfw-deepfunneled"
    split = load_split(DataConfig(root=str(root), n_protected=10, min_images=10, probe_every=2, seed=0,
                                  max_distractor_identities=300, max_images_per_identity=4))
    used = set(split.identities)
    photos = [p for name, paths in scan_identities(root).items() if name not in used for p in paths]
    random.Random(f"{seed}:robust").shuffle(photos)
    detector, crops = FaceDetector(), []
    for path in photos:
        image = load_rgb(path)
        face = central_face(detector(image), image.shape)
        if face is None:
            continue
        crop = align_faces(torch.from_numpy(image).permute(2, 0, 1), [face.landmarks], SPEC)
        crops.append((crop * 255).round().to(torch.uint8))
        if len(crops) == count:
            break
    stacked = torch.cat(crops)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stacked, cache)
    return stacked


def graph_of(model: torch.nn.Module) -> OnnxModule:
    return next(m for m in model.modules() if isinstance(m, OnnxModule))


def perturb(student, images: torch.Tensor, clean: torch.Tensor, eps: float, steps: int,
            generator: torch.Generator) -> torch.Tensor:
    """PGD within L-inf ``eps``: the change of the student's embedding direction, maximised."""
    delta = (torch.rand(images.shape, generator=generator) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        moved = 1 - F.cosine_similarity(student((images + delta).clamp(0, 1)), clean, dim=1)
        (gradient,) = torch.autograd.grad(moved.sum(), delta)
        delta = (delta.detach() + 2.5 * eps / steps * gradient.sign()).clamp(-eps, eps)
    return (images + delta).clamp(0, 1).detach()


def shift_under_attack(model, images: torch.Tensor, eps: float, steps: int = 5) -> float:
    """Mean 1 - cos of ``model``'s embedding after a PGD of ``steps`` at ``eps`` on ``model`` itself."""
    with torch.no_grad():
        clean = model(images)
    attacked = perturb(model, images, clean, eps, steps, torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((1 - F.cosine_similarity(model(attacked), clean, dim=1)).mean())


def export(student, out: Path) -> Path:
    """The original graph with the student's weights, and a spec with the teacher's conventions."""
    graph = graph_of(student)
    proto = load_graph(weights.path("mobilefacenet_fp"))
    trained = {name: getattr(graph, buffer).detach().numpy() for name, buffer in graph._buffer_of.items()}
    for initializer in proto.graph.initializer:
        if initializer.name in trained:
            initializer.CopyFrom(numpy_helper.from_array(trained[initializer.name].astype(np.float32),
                                                         initializer.name))
    path = out / "mfn_fp_robust.onnx"
    onnx.save(proto, path)
    spec = {"input_size": 112, "template": "arcface", "embedding_size": SPEC.embedding_size, "similarity": "cosine",
            "threshold": SPEC.threshold, "channel_order": "RGB", "value_range": "0..255",
            "mean": [MEAN] * 3, "std": [STD] * 3, "licence": "research only (fitted on LFW)",
            "source": "mobilefacenet_fp fine-tuned by experiments/transfer/robust_surrogate.py"}
    path.with_suffix(".yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=6000)
    parser.add_argument("--minutes", type=float, default=30.0, help="training time")
    parser.add_argument("--eps", type=float, default=3 / 255)
    parser.add_argument("--pgd-steps", type=int, default=2)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    crops = training_crops(args.photos + 200, args.seed, args.out / "crops.pt")
    held, train = crops[:200].float() / 255, crops[200:]
    teacher, student = registry.create("mobilefacenet_fp"), registry.create("mobilefacenet_fp")
    trainable = [b for b in graph_of(student).buffers() if b.is_floating_point() and b.dim() >= 1]
    for tensor in trainable:
        tensor.requires_grad_(True)
    optimiser = torch.optim.Adam(trainable, lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    report = {"before": {"attacked_shift_teacher": shift_under_attack(teacher, held[:64], args.eps * 2)}}
    start, step, log = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        index = torch.randint(len(train), (args.batch,), generator=generator)
        images = train[index].float() / 255
        flip = torch.rand(args.batch, generator=generator) < 0.5
        images[flip] = images[flip].flip(-1)
        with torch.no_grad():
            target = teacher(images)
            own = student(images)
        attacked = perturb(student, images, own, args.eps, args.pgd_steps, generator)
        clean_term = 1 - F.cosine_similarity(student(images), target, dim=1).mean()
        robust_term = 1 - F.cosine_similarity(student(attacked), target, dim=1).mean()
        loss = clean_term + args.beta * robust_term
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 20 == 0:
            log.append({"step": step, "seconds": round(time.time() - start), "clean": float(clean_term),
                        "robust": float(robust_term)})
            print(json.dumps(log[-1]), flush=True)
    for tensor in trainable:
        tensor.requires_grad_(False)
    with torch.no_grad():
        agreement = float(F.cosine_similarity(student(held), teacher(held), dim=1).mean())
    report.update(steps=step, log=log, settings=vars(args) | {"out": str(args.out)},
                  held_out_cosine_to_teacher=agreement,
                  after={"attacked_shift_teacher": shift_under_attack(teacher, held[:64], args.eps * 2),
                         "attacked_shift_student": shift_under_attack(student, held[:64], args.eps * 2)})
    path = export(student, args.out)
    check = registry.create(f"onnx:{path}")
    with torch.no_grad():
        report["exported_matches_student"] = float(F.cosine_similarity(check(held[:16]), student(held[:16]), dim=1).min())
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "log"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
