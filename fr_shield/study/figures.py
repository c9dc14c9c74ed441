"""Before | after | amplified difference images of protected photos, to look at what we make.

    python -m fr_shield.study.figures RUN_DIR [--out DIR] [--amplify 8] [--limit 6]

reads ``quality.csv`` of a benchmark job (original and protected paths) and writes one PNG
strip per photo plus ``index.md`` with each strip's quality figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from fr_shield.core.imageio import load_rgb, to_uint8


def comparison_strip(original: np.ndarray, protected: np.ndarray, amplify: float = 8.0) -> Image.Image:
    """[original | protected | |difference| x amplify] side by side, labelled."""
    difference = np.clip(np.abs(protected - original) * amplify, 0, 1)
    panels = [to_uint8(a) for a in (original, protected, difference)]
    height, width = panels[0].shape[:2]
    strip = Image.new("RGB", (3 * width + 20, height + 18), "white")
    draw = ImageDraw.Draw(strip)
    for index, (panel, label) in enumerate(zip(panels, ["original", "protected", f"|difference| x{amplify:g}"])):
        strip.paste(Image.fromarray(panel), (index * (width + 10), 18))
        draw.text((index * (width + 10) + 2, 2), label, fill="black")
    return strip


def write_strips(run_dir: Path, out: Path, amplify: float = 8.0, limit: int = 6) -> list[Path]:
    quality = pd.read_csv(run_dir / "quality.csv")
    out.mkdir(parents=True, exist_ok=True)
    written, lines = [], ["| photo | ST-LPIPS face | SSIM face | PSNR photo | L∞ |", "|---|---|---|---|---|"]
    for row in quality.head(limit).itertuples():
        name = f"{Path(row.photo).stem}.png"
        comparison_strip(load_rgb(row.photo), load_rgb(row.protected), amplify).save(out / name)
        written.append(out / name)
        lines.append(f"| ![{name}]({name}) | {row.lpips_face:.4f} | {row.ssim_face:.4f} | {row.psnr_photo:.2f} | "
                     f"{row.linf * 255:.0f}/255 |")
    (out / "index.md").write_text("\n".join(lines) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fr_shield.study.figures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a benchmark job's output folder (holds quality.csv)")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/figures")
    parser.add_argument("--amplify", type=float, default=8.0)
    parser.add_argument("--limit", type=int, default=6)
    args = parser.parse_args(argv)
    if not (args.run_dir / "quality.csv").exists():
        print(f"error: {args.run_dir} has no quality.csv (run a job with an attack first)", file=sys.stderr)
        return 1
    for path in write_strips(args.run_dir, args.out or args.run_dir / "figures", args.amplify, args.limit):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
