"""Sweeps on other launchers, and jobs that run at the same time, on tiny data and a tiny ONNX model.

* ``hydra/launcher=local`` (conf/hydra/launcher/local.yaml, i.e. submitit's local executor): a
  two-job multirun whose jobs run as two submitit processes, each writing its ``results.csv`` and
  logging a child run under the sweep's one MLflow parent run.
* ``hydra/launcher=slurm``: no cluster here, so ``sbatch`` and ``srun`` are stand-ins on PATH; the
  test reads the batch script submitit hands to ``sbatch`` (partition, GPUs, time, memory, array).
* Two independent ``python -m fr_shield.run`` processes started together on one protected-photo
  cache and one MLflow store, as two SLURM jobs of one sweep would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import onnx
import pandas as pd
import pytest
from PIL import Image
from test_onnx_models import _tiny_fr_model
from test_run import _tiny_dataset

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the cluster extra is not installed")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def _tiny_inputs(tmp_path: Path) -> list[str]:
    """A tiny identity-folder dataset and a tiny ONNX model; the overrides that use them."""
    model = tmp_path / "tiny.onnx"
    onnx.save(_tiny_fr_model(size=32), str(model))
    model.with_suffix(".yaml").write_text("input_size: 32\nthreshold: 0.5\n")
    return [
        "data=folder", f"data.root={_tiny_dataset(tmp_path / 'data')}", "data.pre_aligned=true",
        "data.n_protected=2", "data.min_images=3", "data.probe_every=3",
        f"eval.models=['onnx:{model}']", "progress=false",
    ]


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "HYDRA_FULL_ERROR": "1", **extra}


def _run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fr_shield.run", *arguments], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=TIMEOUT, env=env or _environment())


def _all_runs(store: Path):
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("fr_shield")
    assert experiment is not None, f"no experiment fr_shield in {store}"
    return client, client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_submitit_local_multirun_logs_two_children_under_one_parent(tmp_path):
    sweep, store = tmp_path / "multirun", tmp_path / "mlflow.db"
    done = _run("-m", "attack=none", "blur=median,box", "blur.levels=[3,5]", "hydra/launcher=local",
                *_tiny_inputs(tmp_path), f"logger.tracking_uri=sqlite:///{store}",
                f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Submitit 'local' sweep output dir" in done.stdout + done.stderr

    # Two submitit jobs (two processes, each with its own submitit folder and pickled result).
    results = sorted(sweep.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 2 and len({r.parent.name for r in results}) == 2
    tables = {number: pd.read_csv(sweep / str(number) / "results.csv") for number in (0, 1)}
    assert {tables[n]["transform"].iloc[0] for n in tables} == {"median_blur", "box_blur"}
    for table in tables.values():
        assert len(table) == 2 * 2 and set(table["attack"]) == {"none"}  # levels x subsets

    client, runs = _all_runs(store)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_dir"] == str(sweep)
    assert (sweep / ".mlflow_parent_run").read_text().strip() == parent.info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert {c.data.params["blur.name"] for c in children} == {"median_blur", "box_blur"}
    for child in children:
        assert child.info.status == "FINISHED"
        short = "median" if child.data.params["blur.name"] == "median_blur" else "box"
        top1 = [key for key in child.data.metrics if key.startswith("top1/protected/")]
        assert top1 and all(key.rsplit("/", 1)[1] in (f"{short}_k3", f"{short}_k5") for key in top1), top1
    listed = json.loads(Path(client.download_artifacts(parent.info.run_id, "children.json", str(tmp_path))).read_text())
    assert sorted(listed) == sorted(c.info.run_id for c in children)


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$SBATCH_CAPTURE"
echo "sbatch: error: no SLURM here (stand-in sbatch of tests/test_launcher.py)" >&2
exit 1
"""


@pytest.mark.slow
def test_slurm_preset_hands_sbatch_the_configured_array_job(tmp_path):
    """Hydra + submitit up to ``sbatch`` (a stand-in that keeps the script and refuses the job)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    captured, sweep = tmp_path / "job.sbatch", tmp_path / "multirun"
    env = _environment(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", SBATCH_CAPTURE=str(captured))
    done = _run("-m", "attack=none", "blur=median,box", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=90", "logger=none", "data=folder", f"data.root={tmp_path / 'data'}",
                f"hydra.sweep.dir={sweep}", env=env)
    assert done.returncode != 0 and "no SLURM here" in done.stderr, done.stderr[-3000:]
    script = captured.read_text()
    directives = {line.split("=", 1)[0][len("#SBATCH "):]: line.split("=", 1)[1]
                  for line in script.splitlines() if line.startswith("#SBATCH ") and "=" in line}
    assert directives["--partition"] == "gpu"
    assert directives["--array"] == "0-1%2"  # two sweep points, both at once (array_parallelism is 16)
    assert directives["--gpus-per-task"] == "1" and directives["--cpus-per-task"] == "8"
    assert directives["--mem"] == "32GB" and directives["--time"] == "90"
    assert directives["--output"].startswith(f"{sweep}/.submitit/")
    assert "srun --unbuffered" in script and f"{sys.executable} -u -m submitit.core._submit {sweep}/.submitit/" in script


# ------------------------------------------------------------------------------------------
# Two jobs at once on one cache and one store

# A known failure under concurrency (the traceback in a job's log, HYDRA_FULL_ERROR=1): two
# processes that open a fresh sqlite store at once both create its tables or its experiment
# (tracking.log_job -> mlflow.set_experiment). A sweep's parent run creates the store first.


def _together(tmp_path: Path, inputs: list[str]) -> list[tuple[int, str]]:
    """Start two ``python -m fr_shield.run`` with the same inputs at once; (exit code, log) of each."""
    logs = [tmp_path / f"job{number}.log" for number in (0, 1)]
    processes = []
    try:
        for number, log in enumerate(logs):
            with open(log, "w") as handle:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "fr_shield.run", *inputs, f"hydra.run.dir={tmp_path / f'run{number}'}"],
                    stdout=handle, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=_environment(),
                ))
        codes = [process.wait(TIMEOUT) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(code, log.read_text()) for code, log in zip(codes, logs)]


@pytest.mark.real
def test_two_attack_jobs_at_once_share_the_protected_cache_and_store(tmp_path, weight_cache):
    store, cache = tmp_path / "mlflow.db", tmp_path / "cache"
    mlflow.MlflowClient(f"sqlite:///{store}").create_experiment("fr_shield")  # an existing store, as a sweep's
    model = tmp_path / "tiny.onnx"
    inputs = [*_tiny_inputs(tmp_path), "attack=lowkey", "attack.steps=2", f"attack.surrogates=['onnx:{model}']",
              "attack.batch_size=4", f"logger.tracking_uri=sqlite:///{store}", f"cache_dir={cache}",
              f"weights_dir={weight_cache}"]
    outcomes = _together(tmp_path, inputs)
    for code, log in outcomes:
        assert code == 0, log[-4000:]

    _, runs = _all_runs(store)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all("quality/lpips_face" in r.data.metrics for r in runs)
    (folder,) = (cache / "protected").iterdir()
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 2 * 2  # 2 protected identities x 2 gallery photos
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or "part" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == (112, 112) and image.mode == "RGB"
            image.load()
        record = json.loads(png.with_suffix(".json").read_text())
        assert record["linf"] > 0 and 0 < record["ssim_face"] < 1
    assert json.loads((folder / "attack.json").read_text())["name"] == "lowkey"
    for number in (0, 1):
        quality = pd.read_csv(tmp_path / f"run{number}" / "quality.csv")
        assert sorted(Path(p).name for p in quality["protected"]) == [p.name for p in pngs]
        assert len(pd.read_csv(tmp_path / f"run{number}" / "results.csv")) > 0


@pytest.mark.slow
def test_two_jobs_at_once_on_a_fresh_store(tmp_path):
    """The first use of a new sqlite store by two processes at once (no sweep made it beforehand): both
    would create its tables and one fail, unless the first use is serialised (tracking._store_lock)."""
    store = tmp_path / "mlflow.db"
    inputs = [*_tiny_inputs(tmp_path), "attack=none", f"logger.tracking_uri=sqlite:///{store}",
              f"cache_dir={tmp_path / 'cache'}"]
    outcomes = _together(tmp_path, inputs)
    for code, log in outcomes:
        assert code == 0, log[-4000:]
    _, runs = _all_runs(store)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
