"""Read logged benchmark tables back from MLflow and plot them (used by the notebooks)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from fr_shield.study.tracking import tracking_uri


def load_results(uri: str | None = None, experiment: str = "fr_shield") -> pd.DataFrame:
    """Every job's results table in one frame, with the MLflow run id and parent run id."""
    client = mlflow.MlflowClient(tracking_uri(uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame()
    frames = []
    with tempfile.TemporaryDirectory() as scratch:
        for run in client.search_runs([found.experiment_id], max_results=5000):
            names = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
            if "results.json" not in names:
                continue
            local = client.download_artifacts(run.info.run_id, "results.json", str(Path(scratch) / run.info.run_id))
            table = pd.read_json(local, orient="split")
            table["run_id"] = run.info.run_id
            table["parent_run_id"] = run.data.tags.get("mlflow.parentRunId")
            table["surrogates"] = run.data.params.get("attack.surrogates", "")
            frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_top1_against_level(results: pd.DataFrame, subset: str = "protected", role: str | None = None):
    """One panel per transform family: top-1 against its level, one line per attack and model."""
    import matplotlib.pyplot as plt

    rows = results[(results["subset"] == subset) & (results["transform"] != "none")]
    if role is not None:
        rows = rows[rows["role"].isin([role, "clean"])]
    families = sorted(rows["transform"].unique())
    figure, axes = plt.subplots(1, max(len(families), 1), figsize=(4.5 * max(len(families), 1), 3.6), squeeze=False)
    for axis, family in zip(axes[0], families):
        for (attack, model), line in rows[rows["transform"] == family].groupby(["attack", "model"]):
            line = line.groupby("level", as_index=False)["top1"].mean().sort_values("level")
            axis.plot(line["level"], 100 * line["top1"], marker="o", label=f"{attack} / {model}")
        axis.set_title(family)
        axis.set_xlabel("level (kernel size)")
        axis.set_ylabel(f"top-1 % ({subset})")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def markdown_pivot(results: pd.DataFrame, metric: str = "top1", subset: str = "protected") -> str:
    """A study-style table in Markdown: rows attack + transform + level, columns models, in %."""
    rows = results[results["subset"] == subset]
    keys = ["attack", "transform", "level", "model"]
    pivot = rows.groupby(keys, dropna=False, sort=False)[metric].mean().unstack("model") * 100
    models = [m for m in rows["model"].unique() if m in pivot.columns]
    pivot = pivot[models]
    lines = ["| attack | transform | level | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    for (attack, transform, level), values in pivot.iterrows():
        level_text = "" if pd.isna(level) else f"{level:g}"
        cells = " | ".join("" if pd.isna(v) else f"{v:.1f}" for v in values)
        lines.append(f"| {attack} | {transform} | {level_text} | {cells} |")
    return "\n".join(lines)


def collect_csvs(folders: list[Path]) -> pd.DataFrame:
    """Every ``results.csv`` below the given Hydra output folders, in one frame."""
    frames = [pd.read_csv(path) for folder in folders for path in sorted(Path(folder).rglob("results.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def main(argv: list[str] | None = None) -> int:
    """``python -m fr_shield.study.results FOLDER...``: Markdown tables of every results.csv below."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fr_shield.study.results", description=main.__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="Hydra output or multirun folders")
    parser.add_argument("--subsets", default="protected,all")
    parser.add_argument("--metrics", default="top1,top5")
    args = parser.parse_args(argv)
    results = collect_csvs(args.folders)
    if results.empty:
        print("no results.csv found")
        return 1
    for subset in args.subsets.split(","):
        for metric in args.metrics.split(","):
            print(f"\n#### {metric} (%), {subset} probes\n")
            print(markdown_pivot(results, metric, subset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
