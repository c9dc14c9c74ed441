"""The Hydra config tree and the benchmark job end to end on tiny data and a tiny ONNX model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from PIL import Image

from fr_shield.core.paths import conf_dir
from fr_shield.study.config import register_configs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
from test_onnx_models import _tiny_fr_model

CONF = conf_dir()
register_configs()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["data", "blur", "eval", "attack", "logger", "size", "experiment"])
def test_every_config_option_composes(group):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for option in options(group):
            overrides = [f"{group}={option}"] + (["data.root=/somewhere"] if option == "folder" else [])
            config = compose("config", overrides=overrides)
            OmegaConf.to_container(config, resolve=False, throw_on_missing=False)
            if group not in ("size", "experiment"):  # those two write into the other groups
                assert config[group] is not None


def test_unknown_key_and_option_are_refused():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["attack.stepz=3"])
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["blur=sharpen"])
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["attack.steps=many"])


def _tiny_dataset(root: Path, identities: int = 4, images: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for person in range(identities):
        folder = root / f"Person_{person}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, (1, 1, 3))
        for index in range(images):
            noise = rng.integers(-40, 40, (112, 112, 3))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root


def _job(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    model = tmp_path / "tiny.onnx"
    onnx.save(_tiny_fr_model(size=32), str(model))
    model.with_suffix(".yaml").write_text("input_size: 32\nthreshold: 0.5\n")
    command = [
        sys.executable, "-m", "fr_shield.study.job", "-m",
        "data=folder", f"data.root={_tiny_dataset(tmp_path / 'data')}", "data.pre_aligned=true",
        "data.n_protected=2", "data.min_images=3", "data.probe_every=3",
        f"eval.models=['onnx:{model}']", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'multirun'}", "progress=false",
        *overrides,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)


def _runs(tmp_path: Path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fr_shield")
    return client, client.search_runs([experiment.experiment_id])


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """A multirun of two tiny jobs (box and median blur, kernels 3 and 5) into its own store."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    done = _job(tmp_path, "blur=box,median", "blur.levels=[3,5]")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path


@pytest.mark.slow
def test_multirun_logs_child_runs_whose_tables_match_results_csv(tiny_sweep):
    tmp_path = tiny_sweep
    client, runs = _runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    csvs = sorted((tmp_path / "multirun").glob("*/results.csv"))
    assert len(csvs) == 2
    for child in children:
        local = client.download_artifacts(child.info.run_id, "results.json", str(tmp_path / child.info.run_id))
        logged = pd.read_json(local, orient="split")
        transform = logged["transform"].iloc[0]
        on_disk = next(pd.read_csv(c) for c in csvs if pd.read_csv(c)["transform"].iloc[0] == transform)
        assert len(logged) == len(on_disk) == 2 * 2  # levels x subsets
        pd.testing.assert_frame_equal(logged[on_disk.columns].reset_index(drop=True), on_disk,
                                      check_dtype=False, atol=1e-9)
        assert any(key.startswith("top1/protected/") for key in child.data.metrics)


@pytest.mark.slow
def test_results_notebook_executes_on_a_tiny_run(tiny_sweep, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_sweep / 'mlflow.db'}")
    monkeypatch.setenv("FR_SHIELD_FIGURES", str(tiny_sweep / "figures"))
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    assert (tiny_sweep / "figures" / "top1_vs_kernel.png").stat().st_size > 10_000
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "8 rows from 2 runs" in printed


@pytest.mark.real
def test_attack_job_protects_and_reports_quality(tmp_path, weight_cache):
    model = tmp_path / "tiny.onnx"
    done = _job(tmp_path, "attack=ours", "attack.steps=2", f"attack.surrogates=['onnx:{model}']",
                "attack.batch_size=4")
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(next((tmp_path / "multirun").glob("*/results.csv")))
    assert set(table["role"]) == {"white-box"} and set(table["attack"]) == {"ours"}
    quality = pd.read_csv(next((tmp_path / "multirun").glob("*/quality.csv")))
    assert len(quality) == 2 * 2  # 2 protected identities x 2 gallery photos
    assert (quality["linf"] > 0).all() and (quality["ssim_face"] < 1).all()
    assert len(list((tmp_path / "cache" / "protected").glob("*/*.png"))) == 4
    _, runs = _runs(tmp_path)
    assert any("quality/lpips_face" in run.data.metrics for run in runs)


@pytest.mark.slow
def test_missing_data_folder_is_a_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fr_shield.study.job", "data=folder", f"data.root={tmp_path / 'nothing'}",
         "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
    )
    assert done.returncode != 0
    assert "nothing" in done.stderr + done.stdout and "Traceback" not in done.stderr
