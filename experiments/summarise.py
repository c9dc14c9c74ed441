"""Markdown tables for RESULTS.md from ``fr_shield.study.job`` multirun folders (results.csv per job).

    .venv/bin/python experiments/summarise.py white multirun/phase3_full
    .venv/bin/python experiments/summarise.py heldout multirun/heldout_* multirun/phase3_full
    .venv/bin/python experiments/summarise.py quality multirun/phase3_full

``white``: protected-only top-1 (%) of every evaluator, one row per attack x transform x level.
``heldout``: the same, but each column is a model measured on attacks made *without* it (one
leave-one-out ensemble per model): the black-box table. ``quality``: mean per-photo quality and
attack seconds per attack and ensemble. ``ablation LABEL=JOB_FOLDER ...``: trade-off jobs
(``experiment=tradeoff``) side by side, protected-only top-1 per transform cell at two budgets:

    .venv/bin/python experiments/summarise.py ablation "all on=multirun/tradeoff_glint24/3" \
        "no momentum=multirun/tradeoff_glint24_no_momentum/0" ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

MODELS = ("sface", "dlib_resnet", "facenet_casia")
TRANSFORM_ORDER = ("none", "median_blur", "box_blur")


def _job_tables(folders: list[Path], name: str) -> list[pd.DataFrame]:
    """Every job's ``name`` table, with the job's attack and its surrogates ("" for no attack)."""
    frames = []
    for folder in folders:
        for job in sorted(p.parent for p in folder.glob(f"*/{name}")):
            attack = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["attack"]
            table = pd.read_csv(job / name)
            table["attack"] = attack["name"]
            table["surrogates"] = "+".join(attack["surrogates"]) if attack["name"] != "none" else ""
            frames.append(table)
    return frames


def load(folders: list[Path]) -> pd.DataFrame:
    return pd.concat(_job_tables(folders, "results.csv"), ignore_index=True)


def _rows(table: pd.DataFrame, value: str) -> pd.DataFrame:
    table = table[table["subset"] == "protected"].copy()
    table["level"] = table["level"].fillna(0).astype(int)
    table[value] = (100 * table[value]).round(1)
    return table


def _ordered(pivot: pd.DataFrame) -> pd.DataFrame:
    rank = {name: index for index, name in enumerate(TRANSFORM_ORDER)}
    return pivot.sort_index(key=lambda values: values.map(lambda v: rank.get(v, len(rank)) if isinstance(v, str)
                                                         and values.name == "transform" else v))


def white(table: pd.DataFrame, value: str = "top1") -> pd.DataFrame:
    table = _rows(table, value)
    table = table[table["role"] == "white-box"]
    pivot = table.pivot_table(index=["attack", "transform", "level"], columns="model", values=value).round(1)
    return _ordered(pivot.reindex(columns=list(MODELS)))


def heldout(table: pd.DataFrame, value: str = "top1") -> pd.DataFrame:
    table = _rows(table, value)
    table = table[table.apply(lambda row: row["model"] not in row["surrogates"].split("+"), axis=1)]
    pivot = table.pivot_table(index=["attack", "transform", "level"], columns="model", values=value).round(1)
    pivot = pivot.reindex(columns=[m for m in MODELS if m in pivot.columns])
    pivot["mean"] = pivot.mean(axis=1).round(1)
    return _ordered(pivot)


def quality(folders: list[Path]) -> pd.DataFrame:
    frames = _job_tables(folders, "quality.csv")
    table = pd.concat(frames).drop_duplicates(["attack", "surrogates", "photo"])
    columns = ["lpips_face", "ssim_face", "psnr_face", "lpips_photo", "ssim_photo", "psnr_photo", "linf", "seconds"]
    summary = table.groupby(["attack", "surrogates"])[columns].mean()
    summary["photos"] = table.groupby(["attack", "surrogates"]).size()
    summary["linf"] = (summary["linf"] * 255).round(0)
    return summary.round(3)


def compact(pivot: pd.DataFrame) -> pd.DataFrame:
    """One row per attack x transform, one column per level, cells "model1 / model2 / ..." (the
    column order of ``pivot``, its "mean" column left out)."""
    models = [c for c in pivot.columns if c != "mean"]
    cells = pivot[models].apply(lambda row: " / ".join(f"{v:g}" for v in row), axis=1).rename("cell").reset_index()
    table = cells.pivot_table(index=["attack", "transform"], columns="level", values="cell", aggfunc="first")
    table.columns = ["—" if level == 0 else f"k{level}" for level in table.columns]
    return _ordered(table).fillna("")


def ablation(labelled: list[str], budgets=("unbounded", "ssim0.95_lpips0.05")) -> pd.DataFrame:
    rows = []
    for item in labelled:
        label, folder = item.split("=", 1)
        table = pd.read_csv(Path(folder) / "tradeoff.csv")
        table = table[(table["subset"] == "protected") & (table["role"] != "clean")]
        for budget in budgets:
            for role in ("black-box", "white-box"):
                part = table[(table["budget"] == budget) & (table["role"] == role)]
                cells = part.groupby("cell", sort=False)["top1"].mean() * 100
                rows.append({"variant": label, "budget": budget, "evaluators": role,
                             "SSIM face": round(float(part["mean_ssim_face"].iloc[0]), 3),
                             **{cell: round(value) for cell, value in cells.items()}, "mean": round(cells.mean(), 1)})
    return pd.DataFrame(rows).set_index("variant")


def markdown(frame: pd.DataFrame) -> str:
    frame = frame.reset_index()
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("white", "heldout", "quality", "ablation"))
    parser.add_argument("folders", nargs="+", help="multirun folders (ablation: LABEL=JOB_FOLDER)")
    parser.add_argument("--value", default="top1", choices=("top1", "top5"))
    parser.add_argument("--compact", action="store_true", help="levels as columns, models in each cell")
    args = parser.parse_args()
    if args.table == "ablation":
        print(markdown(ablation(args.folders)))
        return
    folders = [Path(f) for f in args.folders]
    if args.table == "quality":
        print(markdown(quality(folders)))
        return
    table = load(folders)
    pivot = white(table, args.value) if args.table == "white" else heldout(table, args.value)
    print(markdown(compact(pivot) if args.compact else pivot))


if __name__ == "__main__":
    main()
