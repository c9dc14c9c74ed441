"""``python -m fr_shield.run``: one benchmark job (attack x transform family), Hydra-configured.

    python -m fr_shield.run                                  # clean baseline on LFW
    python -m fr_shield.run attack=none blur=median,box -m   # "Clean + blur" rows, two jobs
    python -m fr_shield.run -m experiment=tradeoff attack=lowkey,ours_eot   # budgets x transforms

Each job writes ``results.csv`` (and ``summary.json``) in its Hydra output folder and logs the
tables to MLflow; a multirun's jobs are child runs of one parent run.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fr_shield.attacks.config import attack_names
from fr_shield.core.errors import FrShieldError
from fr_shield.core.face_index import FaceIndex
from fr_shield.core.paths import CONF_PACKAGE, cache_root
from fr_shield.core.runtime import configure_torch, resolve_device
from fr_shield.study import tradeoff
from fr_shield.study.benchmark import BenchmarkPlan, describe, locate_faces, run_benchmark
from fr_shield.study.config import register_configs
from fr_shield.study.data import DataConfig, load_split
from fr_shield.study.protected_cache import protect_photos
from fr_shield.study.tracking import log_job, pivots

log = logging.getLogger("fr_shield.study.job")
register_configs()


def _data_config(config: DictConfig) -> DataConfig:
    values = OmegaConf.to_container(config.data, resolve=True)
    values.pop("pre_aligned", None)
    return DataConfig(**values)


def job(config: DictConfig) -> Path:
    configure_torch()
    started = time.perf_counter()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    cache = Path(config.cache_dir) if config.cache_dir else cache_root()
    split = load_split(_data_config(config))
    index = None if config.data.pre_aligned else FaceIndex(cache / "faces.json")
    located = locate_faces(split, index, config.data.pre_aligned)
    summary = describe(located)
    log.info("data: %s", summary)
    device = resolve_device(config.device)
    if config.get("tradeoff") is not None:
        return _tradeoff_job(config, located, output_dir, cache, device, summary, started)
    protected, quality = None, None
    if config.attack.name != "none":
        targets = [item.path for item in located.split.gallery if item.protected]
        photos = protect_photos(targets, {p: [located.landmarks[p]] for p in targets}, config.attack, cache,
                                device, config.weights_dir, config.progress)
        protected = {path: photo.protected for path, photo in photos.items()}
        quality = pd.DataFrame([{"photo": str(p), "protected": str(photo.protected), **photo.quality}
                                for p, photo in photos.items()])
        quality.drop(columns=["objective_curve", "lpips_curve"], errors="ignore").to_csv(output_dir / "quality.csv", index=False)
        summary["quality_mean"] = quality.drop(columns=["photo", "protected", "objective_curve", "lpips_curve"], errors="ignore").mean().round(4).to_dict()
        log.info("protected %d photos; mean quality %s", len(photos), summary["quality_mean"])
    plan = BenchmarkPlan(config.attack.name, config.blur.name, list(config.blur.levels), list(config.eval.models),
                         config.eval.batch_size, tuple(config.eval.ranks), tuple(config.attack.surrogates))
    table = run_benchmark(located, plan, device, protected, config.weights_dir, cache / "embeddings", config.progress)
    table.to_csv(output_dir / "results.csv", index=False)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for key, pivot in pivots(table).items():
        log.info("%s (%%)\n%s", key, pivot.to_string())
    if config.logger.enabled:
        hydra_config = HydraConfig.get()
        sweep_dir = hydra_config.sweep.dir if hydra_config.mode.name == "MULTIRUN" else None
        run_id = log_job(table, config, output_dir, list(hydra_config.overrides.task), sweep_dir, summary, quality)
        log.info("logged to MLflow run %s", run_id)
    return output_dir / "results.csv"


def _tradeoff_job(config: DictConfig, located, output_dir: Path, cache: Path, device, summary: dict,
                  started: float) -> Path:
    """``experiment=tradeoff``: one attack at several budgets under several transforms."""
    if config.attack.name == "none":
        raise FrShieldError(f"the trade-off needs an attack: attack={'|'.join(attack_names())}")
    table = tradeoff.job(config, located, output_dir, cache, device)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if config.logger.enabled:
        hydra_config = HydraConfig.get()
        sweep_dir = hydra_config.sweep.dir if hydra_config.mode.name == "MULTIRUN" else None
        run_id = tradeoff.log_to_mlflow(config, table, output_dir / "quality.csv", list(hydra_config.overrides.task),
                                        sweep_dir)
        log.info("logged to MLflow run %s", run_id)
    return output_dir / "tradeoff.csv"


@hydra.main(version_base="1.3", config_path=CONF_PACKAGE, config_name="config")
def main(config: DictConfig) -> None:
    try:
        job(config)
    except FrShieldError as error:
        log.error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
