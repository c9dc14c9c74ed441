"""Run the attack jobs that ``prepare.py`` packed, on a GPU machine, and return the cache.

    python3 experiments/gpu/attack_jobs.py --packs .gpu /root/stash --out $OUT

Each job is ``protect_photos`` with the settings ``fr_shield.study.job`` composed here, so the cache it
writes (``protected/<attack key>/<photo key>.png`` + quality JSON) is the one a local run reads.
The surrogates and ST-LPIPS come from the fp16-stored modules (turned back to float32); a job
whose surrogates are not all present is skipped and listed. The cache comes back as tar files of
at most ``--tar-mb`` MB (the transfer's per-file limit), with ``timings.json``.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from fr_shield.attacks.registry import attack_key
from fr_shield.study.protected_cache import protect_photos, study_protector


def load_networks(folders: list[Path], device: torch.device) -> dict[str, torch.nn.Module]:
    networks = {}
    for folder in folders:
        for file in sorted(folder.glob("pack_*/*.pt")):
            if file.stem not in networks:
                networks[file.stem] = torch.load(file, weights_only=False, map_location="cpu").float().to(device).eval()
    return networks


def protector_for(settings: dict, networks: dict[str, torch.nn.Module], device: torch.device):
    """The study's protector for ``settings``, built from the networks loaded here (no weight store)."""
    return study_protector(settings, device, surrogates=[networks[n] for n in settings["surrogates"]],
                           metric=networks["stlpips_alex"])


def pack_cache(cache: Path, out: Path, limit_mb: float) -> list[str]:
    files = sorted(p for p in (cache / "protected").rglob("*") if p.is_file())
    archives, size, current = [], 0, None
    for file in files:
        if current is None or size + file.stat().st_size > limit_mb * 1e6:
            if current is not None:
                current.close()
            name = f"protected_{len(archives)}.tar"
            current, size = tarfile.open(out / name, "w"), 0
            archives.append(name)
        current.add(file, arcname=str(file.relative_to(cache)))
        size += file.stat().st_size + 1024
    if current is not None:
        current.close()
    return archives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=Path, default=Path(".gpu/jobs.json"))
    parser.add_argument("--packs", type=Path, nargs="+", default=[Path(".gpu")])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fr_shield_cache"))
    parser.add_argument("--tar-mb", type=float, default=15.0)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no job after this many seconds")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    networks = load_networks(args.packs, device)
    print("device", torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "networks", sorted(networks))
    jobs = json.loads(args.jobs.read_text())
    base = args.jobs.parent
    timings = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "jobs": [], "skipped": []}
    began = time.perf_counter()
    for job in jobs:
        if time.perf_counter() - began > args.budget_s:
            timings["skipped"].append({"name": job["name"], "out_of_time": True})
            continue
        missing = [n for n in job["settings"]["surrogates"] if n not in networks]
        if job.get("cached_here") or missing:
            timings["skipped"].append({"name": job["name"], "cached_here": bool(job.get("cached_here")), "missing": missing})
            continue
        paths = [base / p["file"] for p in job["photos"]]
        faces = {path: [np.asarray(p["landmarks"], np.float32)] for path, p in zip(paths, job["photos"])}
        started = time.perf_counter()
        photos = protect_photos(paths, faces, job["settings"], args.cache, device, progress=False,
                                protector=protector_for(job["settings"], networks, device))
        seconds = time.perf_counter() - started
        mean = {k: round(float(np.mean([p.quality[k] for p in photos.values()])), 4)
                for k in ("ssim_face", "lpips_face", "psnr_photo", "linf")}
        timings["jobs"].append({"name": job["name"], "key": attack_key(job["settings"]), "photos": len(photos),
                                "seconds": round(seconds, 2), **mean})
        print(json.dumps(timings["jobs"][-1]), flush=True)
        (args.out / "timings.json").write_text(json.dumps(timings, indent=1))
    timings["archives"] = pack_cache(args.cache, args.out, args.tar_mb)
    (args.out / "timings.json").write_text(json.dumps(timings, indent=1))
    print("skipped", timings["skipped"], "archives", timings["archives"])


if __name__ == "__main__":
    main()
