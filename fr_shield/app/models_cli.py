"""``python -m fr_shield.models``: list the registry, or measure LFW verification accuracy.

    python -m fr_shield.models list
    python -m fr_shield models verify [--data DIR] [--pairs 1000] [--models sface,...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fr_shield.core.errors import FrShieldError
from fr_shield.core.paths import default_face_cache, default_lfw
from fr_shield.core.runtime import configure_torch
from fr_shield.models import available, get_spec
from fr_shield.study.verification import VerifyConfig, format_table, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fr_shield.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registry models and their preprocessing")
    check = sub.add_parser("verify", help="LFW verification accuracy of each model")
    check.add_argument("--data", type=Path, default=None,
                       help=f"identity-folder dataset (default: {default_lfw()})")
    check.add_argument("--pairs", type=int, default=1000)
    check.add_argument("--folds", type=int, default=10)
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--models", default=",".join(available()))
    check.add_argument("--cache-dir", type=Path, default=None, help="weight cache folder")
    check.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    check.add_argument("--min-accuracy", type=float, default=None,
                       help="exit non-zero if any model scores below this")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in available():
            spec = get_spec(name)
            print(f"{name:18s} input {spec.input_size[0]}x{spec.input_size[1]} dim {spec.embedding_size:4d} "
                  f"{spec.similarity:9s} {spec.licence:11s} {spec.source}")
        return 0

    configure_torch()
    config = VerifyConfig(
        data=args.data or default_lfw(), models=tuple(args.models.split(",")), pairs=args.pairs,
        folds=args.folds, seed=args.seed, cache_dir=args.cache_dir, face_cache=default_face_cache(),
    )
    started = time.perf_counter()
    try:
        report = verify(config)
    except (FrShieldError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(format_table(report))
    print(f"time: {report['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.min_accuracy is not None:
        failing = [n for n, row in report["models"].items() if row["accuracy"] < args.min_accuracy]
        if failing:
            print(f"below {args.min_accuracy}: {', '.join(failing)}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
