"""``make ui`` for real: the MLflow server on a store written by a tiny multirun, read over REST.

A two-job multirun (``attack=none``, median and box blur, tiny data and a tiny ONNX model) logs
into a temporary sqlite store; ``make ui PORT=... STORE=...`` (or, without make or outside the
project's .venv, the same ``mlflow ui`` command) serves it on a free localhost port; the test
waits for ``/health``, then finds the experiment, the sweep's parent run, its two child runs and
a ``top1/...`` metric (equal to the job's ``results.csv``) through the REST API. The server's
whole process group is stopped at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_onnx_models import _tiny_fr_model
from test_run import _tiny_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 90  # a cold start of the server's workers took ~25 s on 2 shared cores


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    """(sqlite file, sweep folder) of a two-job multirun."""
    import onnx

    tmp_path = tmp_path_factory.mktemp("ui")
    model = tmp_path / "tiny.onnx"
    onnx.save(_tiny_fr_model(size=32), str(model))
    model.with_suffix(".yaml").write_text("input_size: 32\nthreshold: 0.5\n")
    database, sweep = tmp_path / "mlflow.db", tmp_path / "multirun"
    done = subprocess.run(
        [sys.executable, "-m", "fr_shield.run", "-m", "attack=none", "blur=median,box", "blur.levels=[3,5]",
         "data=folder", f"data.root={_tiny_dataset(tmp_path / 'data')}", "data.pre_aligned=true",
         "data.n_protected=2", "data.min_images=3", "data.probe_every=3", f"eval.models=['onnx:{model}']",
         f"logger.tracking_uri=sqlite:///{database}", f"cache_dir={tmp_path / 'cache'}",
         f"hydra.sweep.dir={sweep}", "progress=false"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return database, sweep


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_command(database: Path, port: int) -> list[str]:
    """``make ui`` when the tests run in the project's .venv (what a user types), else its command."""
    store = f"sqlite:///{database}"
    in_project_venv = Path(sys.prefix).resolve() == (PROJECT_ROOT / ".venv").resolve()
    if in_project_venv and shutil.which("make"):
        # -o install: the venv is the one running this test; do not let make reinstall it.
        return ["make", "--no-print-directory", "-o", "install", "ui", f"PORT={port}", f"STORE={store}"]
    return [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store,
            "--host", "127.0.0.1", "--port", str(port)]


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.status, answer.read().decode()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


@pytest.fixture()
def server(store, tmp_path):
    database, _ = store
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(_server_command(database, port), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)  # its own process group: stopped as one
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, started = time.monotonic() + STARTUP_S, time.monotonic()
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            try:
                if _get(f"{base}/health", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /health after {STARTUP_S} s:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"server up after {time.monotonic() - started:.1f} s")
        yield base
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(20)
        except ProcessLookupError:
            pass
        log.close()


def _tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


@pytest.mark.slow
def test_mlflow_ui_serves_the_sweep(server, store):
    _, sweep = store
    status, page = _get(f"{server}/")
    assert status == 200 and "mlflow" in page.lower()  # the UI's page itself

    api = f"{server}/api/2.0/mlflow"
    status, body = _get(f"{api}/experiments/get-by-name?experiment_name=fr_shield")
    experiment = json.loads(body)["experiment"]
    assert status == 200 and experiment["name"] == "fr_shield"

    runs = _post(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50})["runs"]
    parents = [r for r in runs if "mlflow.parentRunId" not in _tags(r)]
    assert len(runs) == 3 and len(parents) == 1
    parent = parents[0]
    assert _tags(parent)["sweep_dir"] == str(sweep) and parent["info"]["status"] == "FINISHED"
    parent_id = parent["info"]["run_id"]

    children = _post(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                            "filter": f"tags.mlflow.parentRunId = '{parent_id}'"})["runs"]
    assert len(children) == 2 and all(c["info"]["status"] == "FINISHED" for c in children)
    params = {c["info"]["run_id"]: {p["key"]: p["value"] for p in c["data"]["params"]} for c in children}
    assert {p["blur.name"] for p in params.values()} == {"median_blur", "box_blur"}

    median = next(c for c in children if params[c["info"]["run_id"]]["blur.name"] == "median_blur")
    metrics = {m["key"]: m["value"] for m in median["data"]["metrics"]}
    key = next(k for k in metrics if k.startswith("top1/protected/") and k.endswith("/median_k3"))
    query = urllib.parse.urlencode({"run_id": median["info"]["run_id"], "metric_key": key})
    status, body = _get(f"{api}/metrics/get-history?{query}")
    (history,) = json.loads(body)["metrics"]
    table = next(t for t in (pd.read_csv(f) for f in sweep.glob("*/results.csv")) if t["transform"].iloc[0] == "median_blur")
    row = table[(table["subset"] == "protected") & (table["level"] == 3)]
    assert history["value"] == pytest.approx(float(row["top1"].iloc[0])) == pytest.approx(metrics[key])
