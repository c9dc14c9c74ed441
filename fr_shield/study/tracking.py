"""MLflow tracking: one tracking URI for every part, tidy tables, a parent run per multirun.

The URI is the config's ``logger.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a sqlite
file in the project (MLflow's and Lightning's defaults differ; one absolute URI keeps every run
visible in ``make ui``). Each job logs its results table (json and csv), the study-style pivots,
one scalar metric per cell and the resolved config. In a Hydra multirun the jobs become child
runs of one parent run that ``MultirunParentRun`` opens before the sweep and closes after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fr_shield.core import transforms
from fr_shield.core.paths import default_tracking_db

PARENT_FILE = ".mlflow_parent_run"


def tracking_uri(configured: str | None = None) -> str:
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_tracking_db()}"


def pivots(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Study-style tables: rows attack + transform + level, columns models; per metric and subset."""
    result = {}
    for metric in ("top1", "top5"):
        for subset, rows in table.groupby("subset"):
            pivot = rows.groupby(["attack", "transform", "level", "model"], dropna=False, sort=False)[metric].first()
            result[f"{metric}_{subset}"] = (pivot.unstack("model") * 100).round(2)
    return result


def _parent_run_id(sweep_dir: str | None) -> str | None:
    if not sweep_dir:
        return None
    marker = Path(sweep_dir) / PARENT_FILE
    return marker.read_text().strip() if marker.exists() else None


def log_job(table: pd.DataFrame, config: DictConfig, output_dir: Path, overrides: list[str],
            sweep_dir: str | None = None, summary: dict | None = None, quality: pd.DataFrame | None = None) -> str:
    """Log one job's results; returns the MLflow run id."""
    mlflow.set_tracking_uri(tracking_uri(config.logger.tracking_uri))
    mlflow.set_experiment(config.logger.experiment)
    parent = _parent_run_id(sweep_dir)
    tags = {"mlflow.parentRunId": parent} if parent else {}
    name = " ".join(overrides) or "defaults"
    with mlflow.start_run(run_name=name, tags=tags) as run:
        flat = pd.json_normalize(OmegaConf.to_container(config, resolve=True), sep=".").iloc[0].to_dict()
        mlflow.log_params({key: str(value)[:500] for key, value in flat.items()})
        mlflow.log_param("overrides", name[:500])
        mlflow.log_metrics({
            f"{row.model_metric}": float(row.value)
            for row in _metric_rows(table).itertuples()
        })
        mlflow.log_table(table, artifact_file="results.json")
        mlflow.log_artifact(str(output_dir / "results.csv"))
        for key, pivot in pivots(table).items():
            flat_pivot = pivot.reset_index()
            flat_pivot.columns = [str(c) for c in flat_pivot.columns]
            mlflow.log_table(flat_pivot, artifact_file=f"pivots/{key}.json")
            mlflow.log_text(pivot.to_csv(), f"pivots/{key}.csv")
        mlflow.log_text(OmegaConf.to_yaml(config, resolve=True), "config.yaml")
        if summary:
            mlflow.log_dict(summary, "summary.json")
            for key, value in (summary.get("quality_mean") or {}).items():
                mlflow.log_metric(f"quality/{key}", float(value))
        if quality is not None and len(quality):
            _log_curves(quality)
            mlflow.log_artifact(str(output_dir / "quality.csv"))
        return run.info.run_id


def _log_curves(quality: pd.DataFrame) -> None:
    """Mean per-step objective and LPIPS of the attack over the protected photos."""
    for column, name in (("objective_curve", "attack/objective"), ("lpips_curve", "attack/lpips")):
        curves = [c for c in quality[column] if c]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        mean = [sum(c[step] for c in curves) / len(curves) for step in range(length)]
        for step, value in enumerate(mean):
            mlflow.log_metric(name, float(value), step=step)


def _metric_rows(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in table.itertuples():
        label = transforms.label(row.transform, None if pd.isna(row.level) else row.level)
        for metric in ("top1", "top5"):
            rows.append({"model_metric": f"{metric}/{row.subset}/{row.model}/{label}", "value": getattr(row, metric)})
    return pd.DataFrame(rows)


class MultirunParentRun(Callback):
    """Opens an MLflow parent run for a Hydra multirun; its jobs log as children."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.logger.enabled:
            return
        mlflow.set_tracking_uri(tracking_uri(config.logger.tracking_uri))
        mlflow.set_experiment(config.logger.experiment)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = " ".join(config.hydra.overrides.task)
        run = mlflow.start_run(run_name=f"sweep {overrides}".strip())
        mlflow.set_tag("sweep_dir", str(sweep_dir))
        (sweep_dir / PARENT_FILE).write_text(run.info.run_id)
        mlflow.end_run()  # reopened by id at the end; jobs may run in other processes

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not config.logger.enabled:
            return
        parent = _parent_run_id(config.hydra.sweep.dir)
        if parent:
            mlflow.set_tracking_uri(tracking_uri(config.logger.tracking_uri))
            client = mlflow.MlflowClient()
            children = client.search_runs(
                [client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
            )
            client.log_text(parent, json.dumps([run.info.run_id for run in children]), "children.json")
            client.set_terminated(parent)
