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
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fr_shield.attacks.config import BUDGET_KEYS, as_dict, to_attack_config
from fr_shield.attacks.protector import FaceProtector, quantise
from fr_shield.attacks.registry import attack_key
from fr_shield.core.files import write_atomic
from fr_shield.core.imageio import to_uint8
from fr_shield.core.quality import photo_quality
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


def _write_png(image: torch.Tensor, target: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image[0].permute(1, 2, 0).cpu().numpy())).save(buffer, format="PNG")
    write_atomic(target, buffer.getvalue())


def study_protector(config, device: torch.device, weights_dir: str | None = None,
                    surrogates: list[torch.nn.Module] | None = None, metric: torch.nn.Module | None = None) -> FaceProtector:
    """The study's protector: as LowKey, the attack runs on the full-resolution photo (no regions,
    no downscaling). ``surrogates`` / ``metric``: networks the caller loaded itself."""
    return FaceProtector(config, device, weights_dir, surrogates=surrogates, metric=metric, work_side=None,
                         whole_photo_fraction=0.0)


def protect_photos(paths: list[Path], faces: dict[Path, list[np.ndarray]], attack_config, cache: Path,
                   device: torch.device, weights_dir: str | None = None, progress: bool = True,
                   protector: FaceProtector | None = None) -> dict[Path, ProtectedPhoto]:
    """Protect every photo (all its listed faces); cached ones are read back, not recomputed.

    With a per-face budget in ``attack_config``, the attack's own output is made (or read) first
    and then scaled down, photo by photo, until every face meets the budget. ``protector``: one
    built by the caller (a borrowed GPU's own copies of the networks; tests' tiny ones).
    """
    config = to_attack_config(attack_config)
    if not config.has_budget:
        return _protect_unbudgeted(paths, faces, config, cache, device, weights_dir, progress, protector)
    # The attack's own output, shared by every budget (unless the attack optimised inside its budget).
    raw_config = config if config.budget_in_loop else to_attack_config(
        {**as_dict(config), **{key: None for key in BUDGET_KEYS}})
    raw = _protect_unbudgeted(paths, faces, raw_config, cache, device, weights_dir, progress, protector)
    return _apply_budget(raw, faces, config, cache, device, weights_dir, protector)


def _folder(cache: Path, config, budgeted: bool = False) -> Path:
    """``budgeted``: the folder of the budget-enforced photos. An attack that optimised inside its
    budget has the same key for its own output and for the enforced one, so the latter gets a suffix."""
    key = attack_key(config) + ("-budget" if budgeted and config.budget_in_loop else "")
    folder = Path(cache) / "protected" / key
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "attack.json", json.dumps(as_dict(config), indent=2).encode())
    return folder


def _chosen(config, faces: list[np.ndarray]) -> list[np.ndarray]:
    return faces[:1] if config.faces == "first" else faces


def _apply_budget(raw: dict[Path, ProtectedPhoto], faces: dict[Path, list[np.ndarray]], config, cache: Path,
                  device: torch.device, weights_dir: str | None,
                  protector: FaceProtector | None) -> dict[Path, ProtectedPhoto]:
    folder = _folder(cache, config, budgeted=True)
    done: dict[Path, ProtectedPhoto] = {}
    for path, photo in raw.items():
        chosen = _chosen(config, faces[path])
        key = photo_key(path, chosen)
        png, record = folder / f"{key}.png", folder / f"{key}.json"
        if png.exists() and record.exists():
            done[path] = ProtectedPhoto(path, png, json.loads(record.read_text()))
            continue
        if protector is None or protector.config != config:
            protector = _budget_protector(protector, config, device, weights_dir)
        clean = photo_tensor(path).to(device)
        attacked = photo_tensor(photo.protected).to(device)
        protected, records = protector.apply_budget(clean, attacked, chosen)
        quality = photo_quality(clean, protected, chosen, protector.metric)
        scale = min((r.scale for r in records), default=1.0)
        quality.update(seconds=photo.quality.get("seconds"), faces=len(chosen), budget_scale=scale,
                       budget_met=all(r.budget_met for r in records),
                       objective_curve=photo.quality.get("objective_curve", []),
                       lpips_curve=photo.quality.get("lpips_curve", []),
                       unbudgeted_ssim_face=photo.quality.get("ssim_face"),
                       unbudgeted_lpips_face=photo.quality.get("lpips_face"))
        _write_png(protected, png)
        write_atomic(record, json.dumps(quality, indent=2).encode())
        done[path] = ProtectedPhoto(path, png, quality)
    return done


def _budget_protector(protector: FaceProtector | None, config, device, weights_dir) -> FaceProtector:
    """A protector with ``config``'s budget that reuses ``protector``'s networks when there is one."""
    if protector is None:
        return study_protector(config, device, weights_dir)
    return study_protector(config, device, weights_dir, surrogates=protector.models, metric=protector.metric)


def _protect_unbudgeted(paths: list[Path], faces: dict[Path, list[np.ndarray]], config, cache: Path,
                        device: torch.device, weights_dir: str | None = None, progress: bool = True,
                        protector: FaceProtector | None = None) -> dict[Path, ProtectedPhoto]:
    folder = _folder(cache, config)
    chosen = {p: _chosen(config, faces[p]) for p in paths}
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
    protector = study_protector(config, device, weights_dir) if protector is None else protector
    batches, by_size = [], {}
    for path in todo:  # same-sized photos batch together; others go one by one
        image = photo_tensor(path)
        by_size.setdefault(tuple(image.shape), []).append((path, image))
    for group in by_size.values():
        for start in range(0, len(group), config.batch_size):
            chunk = group[start:start + config.batch_size]
            batches.append(([str(p) for p, _ in chunk], torch.cat([i for _, i in chunk]), [chosen[p] for p, _ in chunk]))

    def save(output: dict) -> None:
        """Write one batch's photos as soon as it ends: an interrupted run keeps what it finished."""
        for index, name in enumerate(output["keys"]):
            path = Path(name)
            clean = photo_tensor(path).to(device)
            protected = quantise(output["protected"][index:index + 1]).to(device)
            key = photo_key(path, chosen[path])
            quality = photo_quality(clean, protected, chosen[path], protector.metric)
            regions = output["regions"][index]
            quality["seconds"] = output["seconds_per_image"]
            quality["faces"] = len(chosen[path])
            quality["objective_curve"] = regions[0].objective if regions else []
            quality["lpips_curve"] = regions[0].lpips if regions else []
            png = folder / f"{key}.png"
            _write_png(protected, png)
            write_atomic(folder / f"{key}.json", json.dumps(quality, indent=2).encode())
            done[path] = ProtectedPhoto(path, png, quality)

    run_protection(ProtectionModule(protector), batches, device, save, progress)
    return done
