"""Held-out top-1 against the current model of the eye, for every setting of one Glint24 fold.

Reads the study's cache of protected photos (``~/.cache/fr_shield/protected/<attack key>-budget``,
written by the runs in experiments/TRADEOFF.md, "Commands") and ``heldout.csv``. Each cached photo
is an aligned 112-pixel Glint24 face, so the face crop is the photo: it is scored against its
original with ``fr_shield.core.quality.visibility`` as the model stands now, whatever model (if any)
bounded the attack. Prints a markdown table sorted by that reading.

    python experiments/transfer/eye_frontier.py [--surrogates dlib_resnet,facenet_casia,mobilefacenet_fp,mobilefacenet_expo]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fr_shield.core.quality import ssim, visibility
from fr_shield.study.tradeoff import budget_label

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache/fr_shield/protected"
ORIGINALS = HERE.parents[1] / "../shared/data/glint24-aligned"
# Cache folders whose visibility limit was set under an earlier model of the eye (their rows in
# heldout.csv carry that model's label): the second model's two runs, the third model's two runs
# in colour (model 4 added the colour channel; on brightness-only changes it reads as model 3, so
# those keep the plain label), and the first model's runs (label "vis"), recognised by having no
# newer label in heldout.csv.
EARLIER_MODEL = {"89398c71f828-budget": "_m2", "7b7f5d174e58-budget": "_m2",
                 "d54ee3b9aafb-budget": "_m3", "95a0fc58923c-budget": "_m3"}


def _image(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surrogates", default="dlib_resnet,facenet_casia,mobilefacenet_fp,mobilefacenet_expo")
    surrogates = parser.parse_args().surrogates.split(",")
    heldout = pd.read_csv(HERE / "heldout.csv")
    heldout = heldout[(heldout.data == "glint24") & (heldout.surrogates == "+".join(surrogates))]
    originals = {path: _image(path) for path in ORIGINALS.rglob("*.png")}
    rows = []
    for folder in sorted(CACHE.glob("*-budget")):
        attack = json.loads((folder / "attack.json").read_text())
        if attack["surrogates"] != surrogates:
            continue
        label = budget_label(*(attack.get(key) for key in ("ssim_min", "lpips_max", "delta_e_max", "ssim_worst_min",
                                                            "visibility_max")))
        if folder.name in EARLIER_MODEL:
            labels = [label + EARLIER_MODEL[folder.name]]
        else:
            labels = [label, label.replace("_eye", "_vis")]
        found = [heldout[(heldout.attack == attack["name"]) & (heldout.budget == name)] for name in labels]
        found = [(name, rows_) for name, rows_ in zip(labels, found) if not rows_.empty]
        if not found:
            continue
        label, scored = found[0]
        readings = []
        for png in sorted(folder.glob("*.png")):
            protected = _image(png)
            same_size = [path for path, image in originals.items() if image.shape == protected.shape]
            if not same_size:  # an LFW photo of the same setting: not a 112-pixel crop
                continue
            original = originals[min(same_size, key=lambda path: float((originals[path] - protected).abs().mean()))]
            readings.append((float(visibility(original, protected)), float(ssim(original, protected))))
        if not readings:
            continue
        eye, face_ssim = np.array(readings).T
        top1 = scored.groupby("cell").top1.mean() * 100
        rows.append({"attack": attack["name"], "budget": label, "linf": round(attack["linf"] * 255), "eye": eye.mean(),
                     "eye_max": eye.max(), "ssim": face_ssim.mean(), "none": top1.get("none"),
                     "jpeg": top1.get("jpeg_q75"), "resize": top1.get("resize_x0.5")})
    print("| setting | L∞ | budget | visibility now, mean (max) | face SSIM | held-out top-1: none / JPEG 75 / resize ½ |")
    print("|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda row: row["eye"]):
        print(f"| `{row['attack']}` | {row['linf']}/255 | `{row['budget']}` | **{row['eye']:.2f}** ({row['eye_max']:.2f}) "
              f"| {row['ssim']:.3f} | **{row['none']:.1f}** / {row['jpeg']:.1f} / {row['resize']:.1f} % |")


if __name__ == "__main__":
    main()
