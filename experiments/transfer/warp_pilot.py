"""Pilot (issue 13): does a small smooth warp of the face transfer better than additive noise?

A perturbation of another kind than the additive one every ``conf/attack`` setting uses: each face
is moved by a smooth displacement field (a ``--grid`` x ``--grid`` field over the photo, bicubically
upsampled, times the soft face mask, at most ``px`` photo pixels per axis), optionally with an
additive brightness perturbation (L-infinity ``linf``, also inside the face mask) on top. Both are
optimised together by signed-gradient ascent (``--steps`` steps of a tenth of the bound, from a
seeded uniform start of a quarter of the bound) on the mean normalised squared embedding distance
of the surrogates, the objective of ``ours`` without branches, penalty or budget.

Measured on LFW photos the surrogates never saw: ``--people`` identities with at least 4 photos,
drawn with ``--seed``; the first photo is protected, up to three others are the references.
Reported per setting: the face's SSIM, mean Delta E and visibility (model of the eye; the 112 x 112 ArcFace
crop, as saved: 8 bits), and for
each held-out model (never a surrogate) the fraction of (protected, reference) pairs it still
matches at its threshold and their mean similarity. A pilot, not the leave-one-out protocol of
``experiment=transfer``: verification against the same person's other photos, no distractors. A surrogate may also be listed in
``--held-out`` to read its white-box number (the eleventh session: ``--surrogates sface``).

    python experiments/transfer/warp_pilot.py --out runs/warp_pilot
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fr_shield.core.align import FACE_CROP, align_faces
from fr_shield.core.detect import FaceDetector, central_face
from fr_shield.core.imageio import load_rgb, to_uint8
from fr_shield.core.paths import data_root
from fr_shield.core.quality import delta_e, ssim, visibility
from fr_shield.core.regions import soft_mask
from fr_shield.models import create
from fr_shield.models.spec import pair_similarity

SURROGATES = "dlib_resnet,facenet_casia,mobilefacenet_fp,mobilefacenet_expo"
HELD_OUT = "sface,onnx:{m}/mfn_arcface_ms1m.onnx,onnx:{m}/mfn_mxnet_b.onnx,onnx:{m}/mfn_relu6.onnx"
# name: (additive L-infinity, warp bound in photo pixels)
SETTINGS = {
    "add2": (2 / 255, 0.0), "add3": (3 / 255, 0.0),
    "add4": (4 / 255, 0.0), "add5": (5 / 255, 0.0), "add6": (6 / 255, 0.0),
    "warp0.5": (0.0, 0.5), "warp1": (0.0, 1.0), "warp1.5": (0.0, 1.5), "warp2": (0.0, 2.0),
    "add3+warp0.5": (3 / 255, 0.5), "add2+warp1": (2 / 255, 1.0), "add4+warp1": (4 / 255, 1.0),
}


class Pilot:
    def __init__(self, people: list[Path], surrogates: list[str], held_out: list[str], grid: int, steps: int):
        detector = FaceDetector()
        photos, landmarks, references = [], [], []
        for person in people:
            files = sorted(person.glob("*.jpg"))
            image = load_rgb(files[0])
            face = central_face(detector(image), image.shape)
            if face is None:
                continue
            refs = []
            for path in files[1:4]:
                other = load_rgb(path)
                found = central_face(detector(other), other.shape)
                if found is not None:
                    refs.append((torch.from_numpy(other).permute(2, 0, 1), found.landmarks))
            photos.append(image)
            landmarks.append(face.landmarks)
            references.append(refs)
        self.clean = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).contiguous()
        self.faces = [[points] for points in landmarks]
        identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        self.mask = torch.stack([soft_mask(self.clean.shape[-2:], [p], identity) for p in landmarks])[:, None]
        self.surrogates = [create(name) for name in surrogates]
        self.held_out = [create(name) for name in held_out]
        self.grid, self.steps = grid, steps
        height, width = self.clean.shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.identity_grid = torch.stack([xs, ys], -1)[None]
        with torch.no_grad():
            self.clean_embeddings = [model(self.crops(self.clean, model)) for model in self.surrogates]
            self.references = {model.spec.name: [model(torch.cat([align_faces(image, [points], model.spec)
                                                                   for image, points in refs])) for refs in references]
                               for model in self.held_out}

    def crops(self, images: torch.Tensor, model) -> torch.Tensor:
        return torch.cat([align_faces(images[i], self.faces[i], model.spec) for i in range(len(self.faces))])

    def objective(self, images: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for model, clean in zip(self.surrogates, self.clean_embeddings):
            embedding = model(self.crops(images, model))
            total = total + (embedding - clean).pow(2).sum(1) / clean.pow(2).sum(1)
        return total / len(self.surrogates)

    def warp(self, flow: torch.Tensor) -> torch.Tensor:
        """The clean photos moved by the field ``flow`` [N, 2, grid, grid] (photo pixels, x then y)."""
        height, width = self.clean.shape[-2:]
        field = F.interpolate(flow, size=(height, width), mode="bicubic", align_corners=True) * self.mask
        offset = torch.stack([field[:, 0] * 2 / (width - 1), field[:, 1] * 2 / (height - 1)], -1)
        return F.grid_sample(self.clean, self.identity_grid + offset, mode="bilinear", padding_mode="border",
                             align_corners=True)

    def protect(self, linf: float, warp_px: float, seed: int = 0) -> torch.Tensor:
        count, _, height, width = self.clean.shape
        generator = torch.Generator().manual_seed(seed)
        delta = (torch.rand(count, 1, height, width, generator=generator) * 2 - 1) * (linf / 4)
        flow = (torch.rand(count, 2, self.grid, self.grid, generator=generator) * 2 - 1) * (warp_px / 4)

        def render(delta, flow):
            moved = self.warp(flow) if warp_px else self.clean
            return (moved + delta * self.mask).clamp(0, 1)

        for _ in range(self.steps):
            delta.requires_grad_(True)
            flow.requires_grad_(True)
            value = self.objective(render(delta, flow)).sum()
            grad_delta, grad_flow = torch.autograd.grad(value, [delta, flow], allow_unused=True, materialize_grads=True)
            with torch.no_grad():
                delta = (delta + linf / 10 * grad_delta.sign()).clamp(-linf, linf)
                flow = (flow + warp_px / 10 * grad_flow.sign()).clamp(-warp_px, warp_px)
        with torch.no_grad():
            return torch.round(render(delta, flow) * 255) / 255

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor) -> dict:
        clean_crops = torch.cat([align_faces(self.clean[i], f, FACE_CROP) for i, f in enumerate(self.faces)])
        crops = torch.cat([align_faces(images[i], f, FACE_CROP) for i, f in enumerate(self.faces)])
        seen = visibility(clean_crops, crops)
        row = {"ssim_face": float(ssim(clean_crops, crops).mean()),
               "delta_e_face": float(delta_e(clean_crops, crops)[0].mean()),
               "visibility_face": float(seen.mean()), "visibility_face_max": float(seen.max())}
        for model in self.held_out:
            embeddings = model(self.crops(images, model))
            similarity = [pair_similarity(embeddings[i:i + 1], refs, model.spec)
                          for i, refs in enumerate(self.references[model.spec.name])]
            row[model.spec.name] = {"matched": float(np.mean([float((s >= model.spec.threshold).float().mean())
                                                              for s in similarity])),
                                    "similarity": float(np.mean([float(s.mean()) for s in similarity]))}
        return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--surrogates", default=SURROGATES)
    parser.add_argument("--held-out", default=HELD_OUT.format(m=data_root().parent / "models"))
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of: {', '.join(SETTINGS)}")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    lfw = data_root() / "lfw-deepfunneled"
    people = sorted(p for p in lfw.iterdir() if len(list(p.glob("*.jpg"))) >= 4)
    chosen = np.random.default_rng(args.seed).choice(len(people), args.people, replace=False)
    pilot = Pilot([people[i] for i in chosen], args.surrogates.split(","), args.held_out.split(","),
                  args.grid, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [{"setting": "clean", **pilot.evaluate(pilot.clean)}]
    print(json.dumps(rows[-1]), flush=True)
    for name in args.settings.split(","):
        start = time.perf_counter()
        protected = pilot.protect(*SETTINGS[name])
        rows.append({"setting": name, **pilot.evaluate(protected), "seconds": time.perf_counter() - start})
        print(json.dumps(rows[-1]), flush=True)
        for i in range(min(2, len(protected))):  # original | protected, for looking at
            pair = torch.cat([pilot.clean[i], protected[i]], 2).permute(1, 2, 0).numpy()
            Image.fromarray(to_uint8(pair)).save(args.out / f"{name}_{i}.png")
    (args.out / "pilot.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
