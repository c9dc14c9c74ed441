"""Protected photos cached per (attack settings, photo): a sweep over transforms attacks once.

Each protected photo is written as a lossless 8-bit PNG (what a person would post, quantised
like any real file) under ``<cache>/protected/<attack key>/<photo key>.png``, with a JSON record
of its quality (ST-LPIPS, SSIM, PSNR, L-infinity on the face crops and on the full photo) and
the seconds it took. Writes are atomic, so an interrupted run leaves no half file.

A per-face budget (``ssim_min`` / ``lpips_max`` in the attack config) is enforced after the
attack: the attack's own output is cached under the key without the budget, and each budget's
photos (the perturbation scaled by the largest lambda in [0, 1] that meets it, found by
bisection, ``fr_shield.attacks.budget.enforce_budget``, measured on the 8-bit pixels) under the key with
it, with lambda recorded as ``budget_scale``. Several budgets therefore share one attack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fr_shield.attacks.objective import crops_of
from fr_shield.attacks.registry import BUDGET_KEYS, as_dict, attack_key, build_attack, has_budget
from fr_shield.core.align import FACE_CROP
from fr_shield.core.imageio import to_uint8
from fr_shield.core.perceptual import stlpips
from fr_shield.core.quality import linf, psnr, ssim
from fr_shield.study.embed import photo_tensor
from fr_shield.study.lightning import ProtectionModule, run_protection


@dataclass
class ProtectedPhoto:
    source: Path
    protected: Path
    quality: dict


def photo_key(path: Path, faces: list[np.ndarray]) -> str:
    digest = hashlib.sha1(Path(path).read_bytes())
    for face in faces:
        digest.update(np.round(np.asarray(face, np.float32), 2).tobytes())
    return digest.hexdigest()[:16]


def measure_quality(clean: torch.Tensor, protected: torch.Tensor, faces: list[np.ndarray],
                    metric: torch.nn.Module) -> dict:
    """Quality of one protected photo [1, 3, H, W]: on the face crops (mean) and the full photo."""
    with torch.no_grad():
        result = {
            "lpips_photo": float(metric(clean, protected)[0]),
            "ssim_photo": float(ssim(clean, protected)[0]),
            "psnr_photo": float(psnr(clean, protected)[0]),
            "linf": float(linf(clean, protected)[0]),
        }
        if faces:
            clean_crops, protected_crops = crops_of(clean, [faces], FACE_CROP), crops_of(protected, [faces], FACE_CROP)
            result.update({
                "lpips_face": float(metric(clean_crops, protected_crops).mean()),
                "ssim_face": float(ssim(clean_crops, protected_crops).mean()),
                "psnr_face": float(psnr(clean_crops, protected_crops).mean()),
            })
    return result


def quantise(image: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits, as the saved file will be: quality is measured on what gets posted."""
    return torch.round(image.clamp(0, 1) * 255) / 255


def _write_png_atomic(image: torch.Tensor, target: Path) -> None:
    partial = target.with_suffix(".part.png")
    Image.fromarray(to_uint8(image[0].permute(1, 2, 0).cpu().numpy())).save(partial)
    partial.replace(target)


def protect_photos(paths: list[Path], faces: dict[Path, list[np.ndarray]], attack_config, cache: Path,
                   device: torch.device, weights_dir: str | None = None, progress: bool = True,
                   logger=None) -> dict[Path, ProtectedPhoto]:
    """Protect every photo (all its listed faces); cached ones are read back, not recomputed.

    With a per-face budget in ``attack_config``, the attack's own output is made (or read) first
    and then scaled down, photo by photo, until every face meets the budget.
    """
    if not has_budget(attack_config):
        return _protect_unbudgeted(paths, faces, attack_config, cache, device, weights_dir, progress, logger)
    settings = as_dict(attack_config)
    raw_settings = {**settings, **{key: None for key in BUDGET_KEYS}}
    raw = _protect_unbudgeted(paths, faces, raw_settings, cache, device, weights_dir, progress, logger)
    return _apply_budget(raw, faces, settings, cache, device, weights_dir)


def _apply_budget(raw: dict[Path, ProtectedPhoto], faces: dict[Path, list[np.ndarray]], settings: dict,
                  cache: Path, device: torch.device, weights_dir: str | None) -> dict[Path, ProtectedPhoto]:
    from fr_shield.attacks.budget import Budget, enforce_budget

    folder = Path(cache) / "protected" / attack_key(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attack.json").write_text(json.dumps(settings, indent=2))
    budget = Budget(settings["lpips_max"] if settings.get("lpips_max") is not None else float("inf"),
                    settings["ssim_min"] if settings.get("ssim_min") is not None else -1.0)
    first_only = settings["faces"] == "first"
    metric = None
    done: dict[Path, ProtectedPhoto] = {}
    for path, photo in raw.items():
        chosen = faces[path][:1] if first_only else faces[path]
        key = photo_key(path, chosen)
        png, record = folder / f"{key}.png", folder / f"{key}.json"
        if png.exists() and record.exists():
            done[path] = ProtectedPhoto(path, png, json.loads(record.read_text()))
            continue
        if metric is None:
            metric = stlpips("alex", weights_dir).to(device)
        clean = photo_tensor(path).to(device)
        attacked = photo_tensor(photo.protected).to(device)
        outcome = enforce_budget(clean, attacked - clean, chosen, budget, metric, quantise)
        protected = quantise(outcome.protected)
        quality = measure_quality(clean, protected, chosen, metric)
        quality.update(seconds=photo.quality.get("seconds"), faces=len(chosen), budget_scale=outcome.scale,
                       budget_met=outcome.met, budget_evaluations=outcome.evaluations,
                       objective_curve=photo.quality.get("objective_curve", []),
                       lpips_curve=photo.quality.get("lpips_curve", []),
                       unbudgeted_ssim_face=photo.quality.get("ssim_face"),
                       unbudgeted_lpips_face=photo.quality.get("lpips_face"))
        _write_png_atomic(protected, png)
        record.write_text(json.dumps(quality, indent=2))
        done[path] = ProtectedPhoto(path, png, quality)
    return done


def _protect_unbudgeted(paths: list[Path], faces: dict[Path, list[np.ndarray]], attack_config, cache: Path,
                        device: torch.device, weights_dir: str | None = None, progress: bool = True,
                        logger=None) -> dict[Path, ProtectedPhoto]:
    settings = as_dict(attack_config)
    folder = Path(cache) / "protected" / attack_key(attack_config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attack.json").write_text(json.dumps(settings, indent=2))
    first_only = settings["faces"] == "first"
    chosen = {p: (faces[p][:1] if first_only else faces[p]) for p in paths}
    done: dict[Path, ProtectedPhoto] = {}
    todo: list[Path] = []
    for path in paths:
        key = photo_key(path, chosen[path])
        png, record = folder / f"{key}.png", folder / f"{key}.json"
        if png.exists() and record.exists():
            done[path] = ProtectedPhoto(path, png, json.loads(record.read_text()))
        else:
            todo.append(path)
    if not todo:
        return done
    attack = build_attack(attack_config, weights_dir, device)
    metric = stlpips("alex", weights_dir).to(device)
    batch_size = settings["batch_size"]
    batches, by_size = [], {}
    for path in todo:  # same-sized photos batch together; others go one by one
        image = photo_tensor(path)
        by_size.setdefault(tuple(image.shape), []).append((path, image))
    for group in by_size.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            batches.append(([str(p) for p, _ in chunk], torch.cat([i for _, i in chunk]), [chosen[p] for p, _ in chunk]))
    def save(output: dict) -> None:
        """Write one batch's photos as soon as it ends: an interrupted run keeps what it finished."""
        for index, name in enumerate(output["keys"]):
            path = Path(name)
            clean = photo_tensor(path).to(device)
            protected = quantise(output["protected"][index:index + 1]).to(device)
            key = photo_key(path, chosen[path])
            quality = measure_quality(clean, protected, chosen[path], metric)
            quality["seconds"] = output["seconds_per_image"]
            quality["faces"] = len(chosen[path])
            quality["objective_curve"] = [step[index] for step in output["objective"]]
            quality["lpips_curve"] = [step[index] for step in output["lpips"]]
            png = folder / f"{key}.png"
            _write_png_atomic(protected, png)
            (folder / f"{key}.json").write_text(json.dumps(quality, indent=2))
            done[path] = ProtectedPhoto(path, png, quality)

    run_protection(ProtectionModule(attack), batches, device, progress, logger, on_batch=save)
    return done

