"""White-box check of linear backward (issue 13): does its gradient still move the surrogate itself?

One LFW face (``--photo``), each model's own aligned crop: ``--steps`` signed steps of 1/255 inside
L-infinity 6/255 (``mid``'s bound) from a seeded uniform start of 2/255, on the objective of
``ours`` (the normalised squared distance from the clean embedding), with the true gradient and
with linear backward from each ``--starts`` fraction of the model's rectifiers
(``fr_shield.models.rectifiers``). Prints the objective reached: what the model itself sees.

    python experiments/transfer/linbp_check.py
"""

from __future__ import annotations

import argparse

import torch

from fr_shield.core.align import align_faces
from fr_shield.core.detect import FaceDetector, central_face
from fr_shield.core.imageio import load_rgb
from fr_shield.core.paths import data_root
from fr_shield.models import create, rectifiers


def attack(model, crop: torch.Tensor, start: float | None, steps: int, seed: int = 0) -> float:
    with torch.no_grad():
        clean = model(crop)

    def objective(x):
        return ((model(x) - clean) ** 2).sum() / (clean ** 2).sum()

    total = rectifiers.count_rectifiers(model, crop)
    noise = torch.rand(crop.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    x = (crop + noise * 2 / 255).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        if start is None:
            value = objective(x)
        else:
            with rectifiers.linear_backward(start, total):
                value = objective(x)
        (gradient,) = torch.autograd.grad(value, x)
        x = (x.detach() + gradient.sign() / 255).clamp(crop - 6 / 255, crop + 6 / 255).clamp(0, 1)
    with torch.no_grad():
        return float(objective(x))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", default="lfw-deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")
    parser.add_argument("--models", default="dlib_resnet,mobilefacenet_fp,facenet_casia")
    parser.add_argument("--starts", default="0.5,0.8")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    image = load_rgb(data_root() / args.photo)
    face = central_face(FaceDetector()(image), image.shape)
    photo = torch.from_numpy(image).permute(2, 0, 1)
    print("| model | rectifiers | true gradient | " + " | ".join(f"linear from {s}" for s in args.starts.split(",")) + " |")
    for name in args.models.split(","):
        model = create(name)
        crop = align_faces(photo, [face.landmarks], model.spec)
        values = [attack(model, crop, None, args.steps)]
        values += [attack(model, crop, float(s), args.steps) for s in args.starts.split(",")]
        print(f"| {name} | {rectifiers.count_rectifiers(model, crop)} | " + " | ".join(f"{v:.2f}" for v in values) + " |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
