"""The anchor pool of the targeted identity shift runs (issue 13): LFW people outside the split.

Copies the first photo of ``--count`` LFW identities that are neither protected nor distractors in
the transfer experiment's split (``conf/experiment/transfer.yaml``: 10 protected, 300 distractors,
seed 0), drawn with a fixed seed, into ``--out``. No anchor is ever a gallery or probe identity.

    python experiments/transfer/make_anchor_pool.py --out runs/anchor_pool_lfw --count 40
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from fr_shield.core.paths import data_root
from fr_shield.study.data import DataConfig, load_split, scan_identities


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = data_root() / "lfw-deepfunneled"
    split = load_split(DataConfig(root=str(root), n_protected=10, min_images=10, probe_every=2, seed=0,
                                  max_distractor_identities=300, max_images_per_identity=4))
    used = set(split.identities)
    outside = sorted(name for name in scan_identities(root) if name not in used)
    chosen = random.Random(f"{args.seed}:anchors").sample(outside, args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in sorted(chosen):
        shutil.copy(root / name / f"{name}_0001.jpg", args.out / f"{name}.jpg")
    print(f"{len(chosen)} anchor photos in {args.out} ({len(outside)} LFW identities outside the split)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
