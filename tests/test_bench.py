"""``make bench`` end to end on a tiny setting: real models, real LFW photos, a real report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_attack  # noqa: E402
import bench_protect  # noqa: E402
import profile_step  # noqa: E402

pytestmark = pytest.mark.real


def test_bench_writes_the_table_and_json(lfw_root, weight_cache, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench_attack.main(["--json", str(out), "--steps", "2", "--identities", "2", "--distractors", "4",
                              "--quick", "--threads", "2"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["peak_gflops"] > 0
    (case,) = report["cases"]
    for key in ("name", "seconds_per_image", "reference_seconds_per_image", "speedup", "protected_top1"):
        assert key in case
    assert case["seconds_per_image"] > 0 and case["speedup"] > 0
    assert 0.0 <= case["protected_top1"] <= 1.0 and case["gflop_per_step"] > 1.0
    assert report["clean_top1"]["mean"] == 1.0  # two identities, clean: everything is recognised
    assert {row["model"] for row in report["evaluation"]} == {"sface", "dlib_resnet", "facenet_casia"}
    assert "speed-up" in capsys.readouterr().out


def test_bench_protect_times_the_tool_against_its_reference_path(lfw_root, weight_cache, tmp_path, capsys):
    out = tmp_path / "bench_protect.json"
    code = bench_protect.main(["--json", str(out), "--presets", "mid", "--photos", "lfw", "--steps", "2",
                               "--threads", "2"])
    assert code == 0
    (case,) = json.loads(out.read_text())["cases"]
    assert case["name"] == "protect_mid_lfw" and case["faces"] == 1
    assert case["seconds_per_face"] > 0 and case["reference_seconds_per_face"] > 0
    assert case["speedup"] == pytest.approx(case["reference_seconds_per_face"] / case["seconds_per_face"])
    assert case["ssim_face"] >= 0.95 and case["lpips_face"] <= 0.05  # the mid budget holds on both paths
    assert case["reference_ssim_face"] >= 0.95
    assert "protect_mid_lfw" in capsys.readouterr().out


def test_profile_names_every_part_of_a_step(lfw_root, weight_cache, tmp_path, capsys):
    table = tmp_path / "profile.md"
    assert profile_step.main(["--preset", "low", "--repeats", "1", "--threads", "2", "--markdown", str(table)]) == 0
    text = table.read_text()
    for part in ("branch gaussian k7", "surrogate sface", "surrogate facenet_casia", "ST-LPIPS penalty", "whole step"):
        assert part in text
    assert "GFLOP/s" in text and "One step" in capsys.readouterr().out
