"""Pack attack jobs for a borrowed GPU machine that has no PyPI access and a 64 MiB upload limit.

    .venv/bin/python experiments/gpu/prepare.py --out .gpu

Writes ``<out>/jobs.json`` (per job: the resolved attack settings and its photos with landmarks,
exactly what ``fr_shield.study.job`` would pass to ``protect_photos``), copies those photos, and saves
each surrogate and the ST-LPIPS network as a pickled module with float16 parameters (the fp32
files are 224 MB together; fp16 halves them), split into two packs that travel in two calls.
``attack_jobs.py`` then runs the jobs there and returns the protected-photo cache, which is keyed
by attack settings and photo bytes only, so ``fr_shield.study.job`` here reads it back as its own.

The fp16 round trip changes each model slightly; ``--check`` prints the cosine between the
fp32 and the fp16-stored model's embeddings on real faces, so the size of that change is known.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from fr_shield.attacks.config import BUDGET_KEYS, as_dict
from fr_shield.attacks.registry import attack_key
from fr_shield.core.face_index import FaceIndex
from fr_shield.core.paths import cache_root, conf_dir
from fr_shield.core.perceptual import stlpips
from fr_shield.models import create
from fr_shield.study.benchmark import locate_faces
from fr_shield.study.config import register_configs
from fr_shield.study.data import load_split
from fr_shield.study.job import _data_config
from fr_shield.study.protected_cache import photo_key

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("sface", "dlib_resnet", "facenet_casia")
# Which pack each network travels in (each pack stays under the 64 MiB limit with the code).
PACKS = {"facenet_casia": "pack_a", "sface": "pack_b", "dlib_resnet": "pack_b", "stlpips_alex": "pack_b"}
FOLDS = {"full": list(MODELS), "no_sface": ["dlib_resnet", "facenet_casia"],
         "no_dlib": ["sface", "facenet_casia"], "no_facenet": ["sface", "dlib_resnet"]}


def study_jobs() -> list[tuple[str, list[str]]]:
    """Phase 3 on the full ensemble and on every leave-one-out ensemble (size=cpu, LFW)."""
    jobs = []
    for fold, surrogates in FOLDS.items():
        for attack in ("lowkey", "ours", "ours_box"):
            jobs.append((f"{fold}_{attack}", ["size=cpu", f"attack={attack}",
                                              f"attack.surrogates=[{','.join(surrogates)}]"]))
    return jobs


def wide_jobs(identities: int = 12) -> list[tuple[str, list[str]]]:
    """LowKey vs ours on every leave-one-out ensemble with 4x the protected identities of size=cpu."""
    return [(f"wide{identities}_{fold}_{attack}", ["size=cpu", f"data.n_protected={identities}", f"attack={attack}",
                                                   f"attack.surrogates=[{','.join(surrogates)}]"])
            for fold, surrogates in FOLDS.items() if fold != "full" for attack in ("lowkey", "ours")]


def tradeoff_jobs() -> list[tuple[str, list[str]]]:
    """The trade-off's raw attacks (budgets are applied afterwards, here): LFW and Glint24."""
    jobs = [("tradeoff_lfw_ours_box", ["experiment=tradeoff", "attack=ours_box"])]
    for attack in ("lowkey", "ours", "ours_box", "ours_eot"):
        jobs.append((f"tradeoff_glint24_{attack}", ["experiment=tradeoff", f"attack={attack}", "data=glint24",
                                                    "data.n_protected=10", "data.max_images_per_identity=3",
                                                    "data.probe_every=2", "data.max_distractor_identities=null"]))
    return jobs


DATA_FOLDERS = {"lfw": "lfw-deepfunneled", "glint24": "glint24-aligned"}


def compose_job(overrides: list[str]):
    # The data root's default needs a running Hydra app (hydra:runtime.cwd); name it instead.
    dataset = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "lfw")
    root = Path(os.environ["FR_SHIELD_DATA"]) / DATA_FOLDERS[dataset]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"data.root={root}"])


def pack_job(name: str, overrides: list[str], out: Path) -> dict:
    config = compose_job(overrides)
    split = load_split(_data_config(config))
    index = None if config.data.pre_aligned else FaceIndex(cache_root() / "faces.json")
    located = locate_faces(split, index, config.data.pre_aligned)
    settings = as_dict(config.attack)
    settings.update({key: None for key in BUDGET_KEYS})  # the attack's own output; budgets come later
    photos = []
    data_root = Path(config.data.root)
    for item in located.split.gallery:
        if not item.protected:
            continue
        relative = Path(item.path).resolve().relative_to(data_root.resolve())
        target = out / "photos" / data_root.name / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
        photos.append({"file": str(target.relative_to(out)), "landmarks": located.landmarks[item.path].tolist()})
    folder = cache_root() / "protected" / attack_key(settings)
    cached = all((folder / f"{photo_key(Path(item.path), [located.landmarks[item.path]])}.png").exists()
                 for item in located.split.gallery if item.protected)
    return {"name": name, "overrides": overrides, "settings": settings, "photos": photos, "cached_here": cached}


def save_half(module: torch.nn.Module, target: Path) -> None:
    module = module.cpu().half()  # storage only: attack_jobs.py turns it back to float32
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module, target)


def save_models(out: Path) -> None:
    for name in MODELS:
        save_half(create(name), out / PACKS[name] / f"{name}.pt")
    metric = stlpips("alex")
    save_half(metric, out / PACKS["stlpips_alex"] / "stlpips_alex.pt")


def check(out: Path) -> None:
    """Cosine between fp32 and fp16-stored embeddings on a few real LFW faces."""
    jobs = json.loads((out / "jobs.json").read_text())
    job = jobs[0]
    import numpy as np

    from fr_shield.core.align import align_faces
    from fr_shield.study.embed import photo_tensor

    images = [photo_tensor(out / p["file"]) for p in job["photos"]]
    for name in MODELS:
        model = create(name)
        stored = torch.load(out / PACKS[name] / f"{name}.pt", weights_only=False).float()
        cosines = []
        for image, photo in zip(images, job["photos"]):
            crop = align_faces(image[0], [np.asarray(photo["landmarks"], np.float32)], model.spec)
            with torch.no_grad():
                a, b = model(crop), stored(crop)
            cosines.append(float(torch.nn.functional.cosine_similarity(a, b).min()))
        print(f"{name}: fp16-stored vs fp32 embedding cosine min {min(cosines):.6f} mean {np.mean(cosines):.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--check", action="store_true", help="only compare the stored models with fp32")
    parser.add_argument("--set", choices=("study", "wide"), default="study",
                        help="study: phase 3 + leave-one-out folds + trade-off attacks; wide: 12 identities")
    args = parser.parse_args()
    register_configs()
    os.environ.setdefault("FR_SHIELD_DATA", str((ROOT.parent / "shared" / "data").resolve()))
    if args.check:
        check(args.out)
        return
    chosen = study_jobs() + tradeoff_jobs() if args.set == "study" else wide_jobs()
    jobs = [pack_job(name, overrides, args.out) for name, overrides in chosen]
    (args.out / ("jobs.json" if args.set == "study" else f"jobs_{args.set}.json")).write_text(json.dumps(jobs, indent=1))
    if not all((args.out / PACKS[name] / f"{name}.pt").exists() for name in PACKS):
        save_models(args.out)
    for job in jobs:
        print(f"{job['name']:28s} {len(job['photos']):3d} photos  {job['settings']['surrogates']}"
              f"{'  (cached here)' if job['cached_here'] else ''}")


if __name__ == "__main__":
    main()
