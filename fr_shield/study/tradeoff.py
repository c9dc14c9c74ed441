"""The protection / invisibility trade-off: top-1 against per-face SSIM, at several budgets.

One job (``python -m fr_shield.run experiment=tradeoff attack=...``) protects the protected
identities' gallery photos once with the attack, then for each budget of
``tradeoff.budgets`` scales every photo's perturbation down until each face meets it
(``fr_shield.attacks.budget``; the attack runs once, the budgets share it), and evaluates every budget
under every transform of ``tradeoff.transforms`` with every evaluation model. Rows "clean" are
the unprotected photos under the same transforms (what the transform alone does).

It writes ``tradeoff.csv`` (one row per attack x budget x transform x level x model x subset,
with the budget's mean face quality beside top-1 / top-5) and ``quality.csv`` (one row per photo
and budget), and logs both to MLflow with one metric per cell
(``top1/protected/<model>/<transform>/<budget>``).

    python -m fr_shield tradeoff report MULTIRUN_DIR... --out experiments/images/tradeoff

draws one panel per transform (x: mean per-face SSIM, y: protected-only top-1 on the held-out
evaluators, one line per attack), writes the Markdown tables and before | after | difference
strips, and logs the figure to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fr_shield.attacks.config import BUDGET_KEYS, as_dict
from fr_shield.core.imageio import load_rgb
from fr_shield.models.registry import ONNX_PREFIX
from fr_shield.study.benchmark import evaluate_variants
from fr_shield.study.figures import comparison_strip
from fr_shield.study.protected_cache import protect_photos
from fr_shield.study.tracking import cell_metrics, job_run, tracking_uri

log = logging.getLogger(__name__)

TARGET_SSIM, TARGET_TOP1 = 0.95, 0.05  # issue 7's target (with ST-LPIPS <= 0.05)
QUALITY_COLUMNS = ["ssim_face", "ssim_worst_face", "visibility_face", "lpips_face", "delta_e_face", "delta_e_p95_face",
                   "psnr_face", "ssim_photo",
                   "psnr_photo", "linf", "budget_scale", "seconds"]


BUDGET_LABELS = {"ssim_min": "ssim", "lpips_max": "lpips", "delta_e_max": "de", "ssim_worst_min": "worst",
                 "visibility_max": "eye"}  # heldout.csv: "eye" the current model of the eye, "vis" the first


def budget_label(ssim_min: float | None = None, lpips_max: float | None = None, delta_e_max: float | None = None,
                 ssim_worst_min: float | None = None, visibility_max: float | None = None) -> str:
    """``None, None`` -> ``unbounded``; ``0.95, 0.05`` -> ``ssim0.95_lpips0.05``; with a colour
    limit of 2.3 -> ``ssim0.95_lpips0.05_de2.3``; a worst-window SSIM floor adds ``_worst0.88``, a
    visibility limit ``_eye1``."""
    limits = {"ssim_min": ssim_min, "lpips_max": lpips_max, "delta_e_max": delta_e_max,
              "ssim_worst_min": ssim_worst_min, "visibility_max": visibility_max}
    return "_".join(f"{BUDGET_LABELS[key]}{value:g}" for key, value in limits.items() if value is not None) \
        or "unbounded"


def _budgets(config) -> list[dict]:
    return [{key: b.get(key) for key in BUDGET_KEYS} for b in as_dict(config.tradeoff)["budgets"]]


def protect_budgets(config, located, cache: Path, device: torch.device) -> tuple[dict[str, dict[Path, Path]], pd.DataFrame]:
    """Per budget label: photo -> protected file; and the per-photo quality table."""
    targets = [item.path for item in located.split.gallery if item.protected]
    landmarks = {p: [located.landmarks[p]] for p in targets}
    files, rows = {}, []
    for budget in _budgets(config):
        label = budget_label(**budget)
        settings = {**as_dict(config.attack), **budget}
        photos = protect_photos(targets, landmarks, settings, cache, device, config.weights_dir, config.progress)
        files[label] = {path: photo.protected for path, photo in photos.items()}
        for path, photo in photos.items():
            quality = {k: v for k, v in photo.quality.items() if not k.endswith("_curve")}
            quality.setdefault("budget_scale", 1.0)
            rows.append({"attack": config.attack.name, "budget": label, **budget, "photo": str(path),
                         "protected": str(photo.protected), **quality})
    return files, pd.DataFrame(rows)


def evaluate_budgets(config, located, files: dict[str, dict[Path, Path]], device: torch.device,
                     cache: Path) -> pd.DataFrame:
    """Top-1 / top-5 of every budget (and the clean photos) under every transform, every model."""
    variants = {"clean": None, **files} if config.tradeoff.clean_rows else dict(files)
    families = [(family.name, list(family.levels)) for family in config.tradeoff.transforms]
    table = evaluate_variants(located, variants, families, list(config.eval.models), device,
                              set(config.attack.surrogates), tuple(config.eval.ranks), config.eval.batch_size,
                              config.weights_dir, cache / "embeddings", config.progress)
    table.insert(0, "attack", [config.attack.name if v != "clean" else "none" for v in table["variant"]])
    return table.rename(columns={"variant": "budget"})


def data_name(config) -> str:
    """``glint24`` or ``lfw``: which data set a job's photos come from (its root folder says)."""
    return "glint24" if "glint24" in str(config.data.root).lower() else "lfw"


def job(config, located, output_dir: Path, cache: Path, device: torch.device) -> pd.DataFrame:
    """One attack's trade-off: protect at every budget, evaluate, write and log the tables."""
    files, quality = protect_budgets(config, located, cache, device)
    quality.to_csv(output_dir / "quality.csv", index=False)
    table = evaluate_budgets(config, located, files, device, cache)
    table.insert(0, "data", data_name(config))
    table.insert(1, "surrogates", "+".join(config.attack.surrogates))
    means = quality.groupby("budget")[[c for c in QUALITY_COLUMNS if c in quality]].mean()
    table = table.merge(means.add_prefix("mean_").reset_index(), on="budget", how="left")
    table.to_csv(output_dir / "tradeoff.csv", index=False)
    log.info("mean quality per budget\n%s", means.round(4).to_string())
    held_out = table[(table["subset"] == "protected") & (table["role"] != "white-box")]
    if len(held_out):
        pivot = held_out.pivot_table(index=["budget", "model"], columns="cell", values="top1", aggfunc="first")
        log.info("protected-only top-1 (%%), held-out evaluators\n%s", (100 * pivot).round(1).to_string())
    return table


def log_to_mlflow(config, table: pd.DataFrame, quality_path: Path, overrides: list[str],
                  sweep_dir: str | None) -> str:
    """One run (a child of the multirun's): the table, quality.csv, one metric per cell and budget
    (``top1/<subset>/<model>/<cell>/<budget>``) and the budgets' mean quality (``quality/...``)."""
    metrics = cell_metrics(table, table["cell"], suffix="budget")
    for row in table.drop_duplicates("budget").itertuples():
        for column in ("mean_ssim_face", "mean_lpips_face", "mean_delta_e_face", "mean_budget_scale"):
            if hasattr(row, column) and not pd.isna(getattr(row, column)):
                metrics[f"quality/{column[5:]}/{row.budget}"] = float(getattr(row, column))
    name = " ".join(overrides) or "tradeoff"
    with job_run(config, f"tradeoff {name}", sweep_dir, tags={"kind": "tradeoff"}, metrics=metrics,
                 tables={"tradeoff": table}, artifacts=[quality_path]) as run:
        return run.info.run_id


# --------------------------------------------------------------------------- report: plots and tables


def collect(folders: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every ``tradeoff.csv`` and its ``quality.csv`` below the given folders."""
    tables, qualities = [], []
    for folder in folders:
        for path in sorted(Path(folder).rglob("tradeoff.csv")):
            tables.append(pd.read_csv(path))
            if (path.parent / "quality.csv").exists():
                qualities.append(pd.read_csv(path.parent / "quality.csv"))
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(),
            pd.concat(qualities, ignore_index=True) if qualities else pd.DataFrame())


def curve_points(table: pd.DataFrame, subset: str = "protected", role: str = "black-box") -> pd.DataFrame:
    """Top-1 of the ``role`` evaluators (black-box: held out of the ensemble) per attack, budget and
    transform cell, averaged over those models, beside the budget's mean per-face SSIM and
    ST-LPIPS; "clean" rows (the unprotected photos, on the same models) at SSIM 1."""
    rows = table[(table["subset"] == subset) & (table["role"].isin([role, "clean"]))]
    models = set(table.loc[table["role"] == role, "model"])
    rows = rows[rows["model"].isin(models)]
    grouped = rows.groupby(["attack", "budget", "cell"], sort=False).agg(
        top1=("top1", "mean"), top5=("top5", "mean"), n_probes=("n_probes", "first"),
        ssim_face=("mean_ssim_face", "first"), lpips_face=("mean_lpips_face", "first"),
        scale=("mean_budget_scale", "first")).reset_index()
    grouped.loc[grouped["budget"] == "clean", ["ssim_face", "lpips_face", "scale"]] = [1.0, 0.0, 0.0]
    return grouped.drop_duplicates(["attack", "budget", "cell"])


CELL_ORDER = ["none", "median_k5", "median_k9", "median_k11", "box_k5", "box_k9", "box_k11", "jpeg_q75", "resize_x0.5"]


def plot_curves(points: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One panel per transform: held-out protected-only top-1 against mean per-face SSIM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in CELL_ORDER if c in set(points["cell"])] + sorted(set(points["cell"]) - set(CELL_ORDER))
    columns = 3
    rows = int(np.ceil(len(cells) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    attacks = list(dict.fromkeys(points.loc[points["attack"] != "none", "attack"]))  # in the tables' order
    attacks += sorted(set(points["attack"]) - set(attacks) - {"none"})
    for axis, cell in zip(axes.flat, cells):
        here = points[points["cell"] == cell]
        for attack in attacks:
            line = here[here["attack"] == attack].sort_values("ssim_face")
            axis.plot(line["ssim_face"], 100 * line["top1"], marker="o", label=attack)
        clean = here[here["attack"] == "none"]
        if len(clean):
            axis.axhline(100 * clean["top1"].iloc[0], color="grey", linestyle=":", label="clean photos")
        axis.axvline(TARGET_SSIM, color="green", linestyle="--", linewidth=0.8)
        axis.axhline(100 * TARGET_TOP1, color="green", linestyle="--", linewidth=0.8)
        axis.set_title(cell)
        axis.set_xlabel("mean per-face SSIM")
        axis.set_ylabel("top-1 % (protected probes)")
        axis.set_ylim(-3, 103)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(cells):]:
        axis.axis("off")
    axes[0][0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def markdown_tables(points: pd.DataFrame) -> str:
    """Rows attack + budget (with its mean face SSIM / ST-LPIPS / scale), columns transform cells."""
    cells = [c for c in CELL_ORDER if c in set(points["cell"])]
    header = "| attack | budget | SSIM face | ST-LPIPS face | scale | " + " | ".join(cells) + " |"
    lines = [header, "|---|---|---|---|---|" + "---|" * len(cells)]
    for (attack, budget), group in points.groupby(["attack", "budget"], sort=False):
        values = group.set_index("cell")["top1"]
        first = group.iloc[0]
        cells_text = " | ".join(f"{100 * values[c]:.0f}" if c in values else "" for c in cells)
        lines.append(f"| {attack} | {budget} | {first.ssim_face:.3f} | {first.lpips_face:.3f} | {first.scale:.2f} | {cells_text} |")
    return "\n".join(lines)


def write_strips(quality: pd.DataFrame, out: Path, budget: str, limit: int = 2, amplify: float = 8.0) -> list[Path]:
    """before | after | |difference| x amplify for the first photos of each attack at ``budget``."""
    written = []
    rows = quality[quality["budget"] == budget]
    for attack, group in rows.groupby("attack", sort=False):
        for row in group.head(limit).itertuples():
            name = f"tradeoff_{attack}_{budget}_{Path(row.photo).stem}.png"
            comparison_strip(load_rgb(row.photo), load_rgb(row.protected), amplify).save(out / name)
            written.append(out / name)
    return written


def report(folders: list[Path], out: Path, strip_budgets: list[str], log: bool = True, uri: str | None = None) -> str:
    table, quality = collect(folders)
    if table.empty:
        raise SystemExit("no tradeoff.csv found below " + ", ".join(map(str, folders)))
    out.mkdir(parents=True, exist_ok=True)
    held_out = (table["role"] == "black-box").any()
    points = curve_points(table, role="black-box" if held_out else "white-box")
    which = "held-out" if held_out else "white-box (no held-out evaluator in these runs)"
    figure = plot_curves(points, out / "tradeoff_heldout.png",
                         f"protected-only top-1 on {which} evaluators vs per-face SSIM (budgets by bisection)")
    points.to_csv(out / "tradeoff_points.csv", index=False)
    text = f"Protected-only top-1 (%), {which} evaluators:\n\n" + markdown_tables(points)
    if held_out and (table["role"] == "white-box").any():
        text += "\n\nWhite-box evaluators (surrogates), protected-only top-1 (%):\n\n"
        text += markdown_tables(curve_points(table, role="white-box"))
    strips = []
    for budget in strip_budgets:
        strips += write_strips(quality, out, budget)
    (out / "tradeoff_tables.md").write_text(text + "\n")
    if log:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri(uri))
        mlflow.set_experiment("fr_shield")
        with mlflow.start_run(run_name="tradeoff report", tags={"kind": "tradeoff-report"}):
            mlflow.log_param("folders", ",".join(map(str, folders))[:500])
            mlflow.log_artifact(str(figure))
            mlflow.log_table(points, artifact_file="tradeoff_points.json")
            mlflow.log_text(text, "tradeoff_tables.md")
            for strip in strips:
                mlflow.log_artifact(str(strip), "strips")
    return text


HELDOUT_KEY = ["data", "heldout_model", "attack", "surrogates", "budget", "cell"]
# The clean photos' quality: unchanged (their time is no attack's).
CLEAN_QUALITY = {"ssim_face": 1.0, "lpips_face": 0.0, "delta_e_face": 0.0, "delta_e_p95_face": 0.0,
                 "ssim_worst_face": 1.0, "visibility_face": 0.0}
HELDOUT_QUALITY = list(CLEAN_QUALITY)
HELDOUT_COLUMNS = HELDOUT_KEY + ["top1", "top5", "n_probes", *HELDOUT_QUALITY, "seconds_per_photo"]


def model_label(name: str) -> str:
    """A registry name as it is; ``onnx:<path>`` -> the file's stem."""
    return Path(name[len(ONNX_PREFIX):]).stem if name.startswith(ONNX_PREFIX) else name


def ensemble_label(surrogates: str) -> str:
    """A run's ``a+b+onnx:<path>`` ensemble with each model labelled as :func:`model_label` does; '-' if none."""
    return "+".join(model_label(name) for name in surrogates.split("+")) if surrogates else "-"


def heldout_table(folders: list[Path]) -> pd.DataFrame:
    """Issue 13's tidy table: one row per (data, held-out model, attack setting, surrogates, budget,
    transform cell) from the jobs' ``tradeoff.csv``, with the budget's mean face quality and the
    attack's seconds per photo. Only black-box evaluators (never a surrogate of that job) and the
    clean photos (attack ``none``, budget ``clean``) appear."""
    parts = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("tradeoff.csv")):
            table = pd.read_csv(path)
            quality = pd.read_csv(path.parent / "quality.csv")
            measured = [c for c in [*HELDOUT_QUALITY, "seconds"] if c in quality]  # older jobs lack the newer ones
            means = quality.groupby("budget")[measured].mean().reset_index()
            surrogates = set(str(table["surrogates"].iloc[0]).split("+"))
            rows = table[(table["subset"] == "protected") & ~table["model"].isin(surrogates)]
            rows = rows.drop(columns=[c for c in rows.columns if c.startswith("mean_")]).merge(means, on="budget", how="left")
            clean = rows["budget"] == "clean"
            rows.loc[clean, [*HELDOUT_QUALITY, "seconds"]] = [*CLEAN_QUALITY.values(), 0.0]
            rows.loc[clean, "surrogates"] = ""
            parts.append(rows.assign(heldout_model=rows["model"].map(model_label)).rename(columns={"seconds": "seconds_per_photo"}))
    if not parts:
        raise SystemExit("no tradeoff.csv found below " + ", ".join(map(str, folders)))
    table = pd.concat(parts, ignore_index=True).reindex(columns=HELDOUT_COLUMNS)
    return table.drop_duplicates(HELDOUT_KEY, keep="last")


def heldout_markdown(table: pd.DataFrame) -> str:
    """The ablation table: per (data, attack setting, surrogates, budget) the mean protected-only
    top-1 (%) over that run's held-out evaluators in every transform cell, with the face quality
    and seconds per photo; then the unblurred cell per held-out model."""
    table = table.fillna({"surrogates": ""})  # the clean rows have no ensemble
    cells = [c for c in CELL_ORDER if c in set(table["cell"])]
    keys = ["data", "attack", "surrogates", "budget"]
    lines = ["| data | setting | surrogates | budget | SSIM face (worst 5 %) | visibility | ST-LPIPS face | ΔE face (p95) | "
             "s / photo | held out | " + " | ".join(cells) + " |", "|---" * (10 + len(cells)) + "|"]
    for key, group in table.groupby(keys, sort=False):
        first = group.iloc[0]
        top1 = group.groupby("cell")["top1"].mean()
        models = ", ".join(sorted(set(group["heldout_model"])))
        worst, visible = (getattr(first, key, float("nan")) for key in ("ssim_worst_face", "visibility_face"))
        worst = "" if pd.isna(worst) else f" ({worst:.2f})"
        visible = "" if pd.isna(visible) else f"{visible:.2f}"
        quality = (f"{first.ssim_face:.3f}{worst} | {visible} | {first.lpips_face:.3f} | {first.delta_e_face:.2f} ({first.delta_e_p95_face:.1f}) | "
                   f"{first.seconds_per_photo:.0f}")
        lines.append(f"| {key[0]} | {key[1]} | {ensemble_label(key[2])} | {key[3]} | {quality} | {models} | "
                     + " | ".join(f"{100 * top1[c]:.0f}" if c in top1 else "" for c in cells) + " |")
    plain = table[table["cell"] == "none"]
    models = sorted(set(plain["heldout_model"]))
    lines += ["", "Unblurred cell, protected-only top-1 (%) per held-out model:", "",
              "| data | setting | surrogates | budget | " + " | ".join(models) + " |", "|---" * (4 + len(models)) + "|"]
    for key, group in plain.groupby(keys, sort=False):
        values = group.set_index("heldout_model")["top1"]
        lines.append(f"| {key[0]} | {key[1]} | {ensemble_label(key[2])} | {key[3]} | "
                     + " | ".join(f"{100 * values[m]:.0f}" if m in values else "" for m in models) + " |")
    return "\n".join(lines)


def write_heldout(folders: list[Path], out: Path) -> pd.DataFrame:
    """Merge the folders' rows into ``out`` (rows with the same key are replaced); the merged table."""
    table = heldout_table(folders)
    if out.exists():  # the clean rows' empty ensemble reads back as NaN
        table = pd.concat([pd.read_csv(out).fillna({"surrogates": ""}), table], ignore_index=True)
        table = table.drop_duplicates(HELDOUT_KEY, keep="last")
    table = table.reindex(columns=HELDOUT_COLUMNS).sort_values(HELDOUT_KEY)  # an older file lacks the newer columns
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4f")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fr_shield tradeoff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("report", help="plots, tables and strips from tradeoff jobs' folders")
    make.add_argument("folders", nargs="+", type=Path)
    make.add_argument("--out", type=Path, default=Path("experiments/images/tradeoff"))
    make.add_argument("--strips", default="ssim0.95_lpips0.05", help="budget labels to draw strips for (comma)")
    make.add_argument("--no-mlflow", action="store_true")
    tidy = commands.add_parser("heldout", help="merge the jobs' held-out rows into one tidy CSV")
    tidy.add_argument("folders", nargs="+", type=Path)
    tidy.add_argument("--out", type=Path, default=Path("experiments/transfer/heldout.csv"))
    args = parser.parse_args(argv)
    if args.command == "heldout":
        table = write_heldout(args.folders, args.out)
        print(heldout_markdown(table))
        print(f"\n{len(table)} rows in {args.out}")
        return 0
    print(report(args.folders, args.out, [b for b in args.strips.split(",") if b], not args.no_mlflow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
