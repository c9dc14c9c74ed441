"""The package as a user installs it: a wheel (not the source tree) in a folder of its own.

The wheel is built from this checkout, installed with ``pip install --target`` into a throw-away
folder and run from another throw-away folder, so nothing can be found through the source tree:
``conf/`` must travel inside the wheel as ``fr_shield.conf``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding the installed wheel (its dependencies come from the running environment)."""
    wheels = tmp_path_factory.mktemp("wheels")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "--quiet", "-w", str(wheels)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("fr_shield-*.whl")
    target = tmp_path_factory.mktemp("site")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return target


def run_installed(site: Path, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.mark.slow
def test_the_wheel_carries_its_configs_and_runs_from_any_folder(installed, tmp_path):
    where = run_installed(installed, tmp_path, "-c", "import fr_shield, fr_shield.core.paths as p; "
                          "print(fr_shield.__file__); print(p.conf_dir())")
    assert where.returncode == 0, where.stderr
    module_file, conf = where.stdout.split()
    assert Path(module_file).is_relative_to(installed) and Path(conf).is_relative_to(installed)
    assert (Path(conf) / "config.yaml").is_file() and list((Path(conf) / "preset").glob("*.yaml"))

    helped = run_installed(installed, tmp_path, "-m", "fr_shield", "protect", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "mid" in helped.stdout and "presets:" in helped.stdout

    composed = run_installed(installed, tmp_path, "-c", (
        "import json\n"
        "from fr_shield.attacks.config import attack_names, compose_attack, compose_preset, preset_names\n"
        "print(json.dumps({'attacks': {n: compose_attack(n).name for n in attack_names()},\n"
        "                  'presets': {n: compose_preset(n).attack.name for n in preset_names()}}))"))
    assert composed.returncode == 0, composed.stderr[-3000:]
    names = json.loads(composed.stdout.strip().splitlines()[-1])
    assert {"lowkey", "ours", "ours_box", "ours_eot"} <= set(names["attacks"])
    assert names["attacks"]["ours"] == "ours"
    assert set(names["presets"]) == {"low", "mid", "high"}

    job = run_installed(installed, tmp_path, "-m", "fr_shield.run", "attack=ours", "blur=median", "--cfg", "job")
    assert job.returncode == 0, job.stderr[-3000:]
    assert "median" in job.stdout and "norm_squared" in job.stdout


@pytest.mark.real
def test_the_installed_tool_copies_a_photo_without_a_face(installed, tmp_path, weight_cache):
    photo = tmp_path / "wall.png"
    Image.fromarray(np.full((64, 80, 3), 180, np.uint8)).save(photo)
    out = tmp_path / "protected"
    result = run_installed(installed, tmp_path, "-m", "fr_shield", "protect", str(photo), "--out", str(out),
                           "--no-progress", "--weights-dir", str(weight_cache))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "copied" in result.stdout
    assert (out / "wall.png").read_bytes() == photo.read_bytes()
