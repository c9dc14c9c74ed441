"""The ``fr-shield`` dispatcher and the errors at the door: a wrong name is one line naming the
valid options (exit 2), before any photo is read or any network is loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fr_shield.app import check, cli, protect


def test_dispatcher_lists_commands_and_rejects_unknown_ones(capsys):
    assert cli.main([]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("protect", "check", "samples", "weights", "models"))
    assert cli.main(["--help"]) == 0
    assert cli.main(["protekt"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "unknown command 'protekt'" in error and "protect, check" in error


def test_the_installed_entry_point_dispatches():
    done = subprocess.run([sys.executable, "-m", "fr_shield", "protect", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "presets:" in done.stdout and "ST-LPIPS<=0.05" in done.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--attack", "nosuch"], "unknown attack 'nosuch'; choose one of: lowkey, ours, ours_anchor, ours_box, ours_direction, ours_dropout"),
    (["--preset", "extreme"], "unknown preset 'extreme'; choose one of: high, low, mid"),
    (["--surrogates", "sface,nosuch"], "unknown face-recognition model 'nosuch'; choose one of: dlib_resnet"),
    (["--surrogates", "onnx:/no/such/model.onnx"], "model file /no/such/model.onnx"),
])
def test_protect_rejects_unknown_names_before_reading_a_photo(tmp_path, capsys, arguments, message):
    missing_photo = tmp_path / "not-read.jpg"  # would be an error of its own if it were read first
    out = tmp_path / "out"
    code = protect.main([str(missing_photo), "--out", str(out), "--no-progress", *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and message in error, error
    assert not out.exists()  # nothing was planned or written


@pytest.mark.parametrize("arguments, message", [
    (["--models", "sface,nosuch"], "unknown face-recognition model 'nosuch'"),
    (["--transforms", "none,median_k13"], "unknown check transform(s) median_k13; available: none, jpeg_q75"),
])
def test_check_rejects_unknown_names_before_loading_models(tmp_path, capsys, arguments, message):
    code = check.main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-progress", *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and message in error, error


def test_check_says_which_folder_is_missing(tmp_path, capsys):
    code = check.main([str(tmp_path / "originals"), str(tmp_path), "--no-progress", "--models", "sface"])
    assert code == 2 and f"{tmp_path / 'originals'} does not exist" in capsys.readouterr().err
