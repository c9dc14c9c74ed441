"""MLflow tracking: one tracking URI for every part, tidy tables, a parent run per multirun.

The URI is the config's ``logger.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a sqlite
file in the project (MLflow's and Lightning's defaults differ; one absolute URI keeps every run
visible in ``make ui``). Every job's run comes from ``job_run`` (parent tag, flattened config as
params, config.yaml, metrics, tables as json and csv): a benchmark job (``log_job``) logs its
results table, the study-style pivots and one scalar metric per cell; the trade-off logs its own
(``fr_shield.study.tradeoff.log_to_mlflow``). In a Hydra multirun the jobs become child
runs of one parent run that ``MultirunParentRun`` opens before the sweep and closes after it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from hydra.experimental.callback import Callback
from mlflow import ActiveRun
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


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time through a sqlite store's first use: jobs that start together on a
    new store would otherwise both create its tables (and one fail: "table ... already exists")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri[len("sqlite:///"):] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _use_experiment(config: DictConfig) -> None:
    uri = tracking_uri(config.logger.tracking_uri)
    with _store_lock(uri):
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(config.logger.experiment)


@contextmanager
def job_run(config: DictConfig, run_name: str, sweep_dir: str | None = None, *, tags: dict | None = None,
            params: dict | None = None, metrics: dict[str, float] | None = None,
            tables: dict[str, pd.DataFrame] | None = None, artifacts: Iterable[Path] = ()) -> Iterator[ActiveRun]:
    """One job's MLflow run, the child of its multirun's parent run (if ``sweep_dir`` has one).

    Logs the resolved config (flattened as params, with ``params``, and as ``config.yaml``),
    ``metrics``, each table of ``tables`` (artifact name without extension -> frame) as
    ``<name>.json`` (``mlflow.log_table``) and ``<name>.csv``, and the ``artifacts`` files;
    yields the active run for anything else.
    """
    _use_experiment(config)
    parent = _parent_run_id(sweep_dir)
    tags = {**({"mlflow.parentRunId": parent} if parent else {}), **(tags or {})}
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        flat = pd.json_normalize(OmegaConf.to_container(config, resolve=True), sep=".").iloc[0].to_dict()
        mlflow.log_params({key: str(value)[:500] for key, value in {**flat, **(params or {})}.items()})
        mlflow.log_text(OmegaConf.to_yaml(config, resolve=True), "config.yaml")
        if metrics:
            mlflow.log_metrics(metrics)
        for name, frame in (tables or {}).items():
            mlflow.log_table(frame, artifact_file=f"{name}.json")
            mlflow.log_text(frame.to_csv(index=False), f"{name}.csv")
        for path in artifacts:
            mlflow.log_artifact(str(path))
        yield run


def cell_metrics(table: pd.DataFrame, cells: Iterable[str], suffix: str | None = None) -> dict[str, float]:
    """``{top1|top5}/<subset>/<model>/<cell>[/<row's suffix column>]`` -> value, for every row."""
    metrics = {}
    for row, cell in zip(table.itertuples(), cells):
        tail = f"/{getattr(row, suffix)}" if suffix else ""
        for metric in ("top1", "top5"):
            metrics[f"{metric}/{row.subset}/{row.model}/{cell}{tail}"] = float(getattr(row, metric))
    return metrics


def log_job(table: pd.DataFrame, config: DictConfig, output_dir: Path, overrides: list[str],
            sweep_dir: str | None = None, summary: dict | None = None, quality: pd.DataFrame | None = None) -> str:
    """Log one job's results; returns the MLflow run id."""
    name = " ".join(overrides) or "defaults"
    cells = [transforms.label(t, None if pd.isna(level) else level) for t, level in zip(table["transform"], table["level"])]
    metrics = cell_metrics(table, cells)
    metrics.update({f"quality/{key}": float(value) for key, value in ((summary or {}).get("quality_mean") or {}).items()})
    tables = {"results": table}
    for key, pivot in pivots(table).items():
        flat_pivot = pivot.reset_index()
        flat_pivot.columns = [str(c) for c in flat_pivot.columns]
        tables[f"pivots/{key}"] = flat_pivot
    with_quality = quality is not None and len(quality) > 0
    with job_run(config, name, sweep_dir, params={"overrides": name}, metrics=metrics, tables=tables,
                 artifacts=[output_dir / "quality.csv"] if with_quality else []) as run:
        if summary:
            mlflow.log_dict(summary, "summary.json")
        if with_quality:
            _log_curves(quality)
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


class MultirunParentRun(Callback):
    """Opens an MLflow parent run for a Hydra multirun; its jobs log as children."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.logger.enabled:
            return
        _use_experiment(config)
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
