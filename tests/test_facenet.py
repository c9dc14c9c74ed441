"""FaceNet (CASIA-WebFace) port: graph reader, module behaviour, and agreement with OpenCV's runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fr_shield.core import weights
from fr_shield.models import facenet, tf_graph

# Two photos each of four people: well-known, many LFW images, frontal enough for YuNet.
PEOPLE = ["Colin_Powell", "George_W_Bush", "Serena_Williams", "Tony_Blair"]


@pytest.fixture(scope="module")
def graph_path(weight_cache) -> Path:
    return weights.path("facenet_casia", weight_cache)


@pytest.fixture(scope="module")
def graph(graph_path) -> tf_graph.FrozenGraph:
    return tf_graph.load(graph_path)


@pytest.fixture(scope="module")
def model(graph) -> torch.nn.Module:
    torch.set_flush_denormal(True)  # FaceNet is several times slower on denormals on CPU
    net = facenet.InceptionResNetV1()
    facenet.load_graph_weights(net, graph)
    return net.eval()


def _align(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(points, facenet.SPEC.template, method=cv2.LMEDS)
    return cv2.warpAffine(rgb, matrix, facenet.SPEC.input_size[::-1])


@pytest.fixture(scope="module")
def faces(lfw_root, weight_cache) -> torch.Tensor:
    """[8, 3, 160, 160] RGB crops in [0, 1]: two per person of ``PEOPLE``, aligned with YuNet."""
    import cv2

    detector = cv2.FaceDetectorYN.create(str(weights.path("yunet", weight_cache)), "", (250, 250), 0.6)
    crops = []
    for person in PEOPLE:
        for path in sorted((lfw_root / person).glob("*.jpg"))[:2]:
            bgr = cv2.imread(str(path))
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, found = detector.detect(bgr)
            assert found is not None, f"no face found in {path}"
            centre = np.array(bgr.shape[1::-1]) / 2.0
            row = min(found, key=lambda r: np.linalg.norm(r[:2] + r[2:4] / 2 - centre))
            points = row[4:14].reshape(5, 2).astype(np.float32)
            # Template order: image-left eye, image-right eye, nose, image-left then right mouth corner.
            eyes = points[:2][np.argsort(points[:2, 0])]
            mouth = points[3:5][np.argsort(points[3:5, 0])]
            points = np.vstack([eyes, points[2:3], mouth])
            crops.append(_align(np.ascontiguousarray(bgr[:, :, ::-1]), points))
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def test_tensor_to_array_decodes_packed_and_splatted_values():
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2

    packed = tensor_pb2.TensorProto(
        dtype=1,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 2}, {"size": 3}]),
        tensor_content=np.arange(6, dtype="<f4").tobytes(),
    )
    np.testing.assert_array_equal(tf_graph.tensor_to_array(packed), np.arange(6, dtype=np.float32).reshape(2, 3))
    # TensorFlow stores "all ones" as a single value that fills the shape.
    splat = tensor_pb2.TensorProto(dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 4}]),
                                   float_val=[1.0])
    np.testing.assert_array_equal(tf_graph.tensor_to_array(splat), np.ones(4, np.float32))
    scalar = tensor_pb2.TensorProto(dtype=3, int_val=[3])
    assert tf_graph.tensor_to_array(scalar).item() == 3


@pytest.mark.real
def test_graph_reader_finds_expected_tensors(graph):
    consts = graph.constants
    assert consts["InceptionResnetV1/Conv2d_1a_3x3/weights"].shape == (3, 3, 3, 32)
    assert consts["InceptionResnetV1/Repeat_1/block17_10/Branch_1/Conv2d_0b_1x7/weights"].shape == (1, 7, 128, 128)
    assert consts["InceptionResnetV1/Bottleneck/weights"].shape == (1792, 512)
    np.testing.assert_array_equal(consts["InceptionResnetV1/Bottleneck/BatchNorm/Const"], np.ones(512, np.float32))
    assert float(consts["InceptionResnetV1/Repeat/block35_1/mul/x"]) == pytest.approx(0.17)
    assert float(consts["InceptionResnetV1/Block8/mul/x"]) == 1.0
    assert len(graph.ops("Conv2D")) == 132
    assert graph.nodes["InceptionResnetV1/Conv2d_1a_3x3/Conv2D"].attrs["padding"] == "VALID"
    assert graph.nodes["embeddings"].op == "Mul"  # the graph ends in its own L2 normalisation


@pytest.mark.real
def test_output_shape_finite_and_unit_norm(model):
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        e = model(x)
    assert e.shape == (2, facenet.SPEC.embedding_size)
    assert torch.isfinite(e).all()
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)


@pytest.mark.real
def test_stable_under_tiny_input_change(model, faces):
    x = faces[:2]
    noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 0.5) * (2.0 / 255.0)
    with torch.no_grad():
        a, b = model(x), model((x + noise).clamp(0, 1))
    assert torch.isfinite(b).all()
    assert (a * b).sum(dim=1).min() > 0.999


@pytest.mark.real
def test_gradient_reaches_input(model, faces):
    x = faces[:2].clone().requires_grad_(True)
    e = model(x)
    (e[0] * e[1]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.real
def test_same_person_closer_than_different_person(model, faces):
    with torch.no_grad():
        e = model(faces)
    sims = e @ e.T
    person = torch.arange(len(PEOPLE)).repeat_interleave(2)
    same = sims[0::2, 1::2].diagonal()
    different = sims[person[:, None] != person[None, :]].view(len(person), -1)
    # Each photo's nearest other photo is the same person's (some different pairs, e.g. two
    # politicians in press photos, do reach ~0.6, so no global margin is asserted).
    partner = sims[torch.arange(len(person)), torch.arange(len(person)) ^ 1]
    assert (partner > different.max(dim=1).values).all(), sims
    assert same.mean() > facenet.SPEC.threshold > different.mean()


@pytest.mark.real
def test_matches_opencv_on_real_faces(model, faces, graph_path):
    cv2 = pytest.importorskip("cv2")
    try:
        net = cv2.dnn.readNetFromTensorflow(str(graph_path))
    except cv2.error as error:
        pytest.skip(f"OpenCV cannot load the graph: {error}")
    # OpenCV takes the graph's own input: NCHW, (x - 127.5) / 128 on 0..255 RGB. The graph
    # reshapes to a fixed batch of 1, so images go through one at a time.
    blobs = ((faces.numpy() * 255.0 - 127.5) / 128.0).astype(np.float32)
    reference = []
    for blob in blobs:
        net.setInput(blob[None])
        reference.append(net.forward().reshape(-1))
    reference = np.stack(reference)
    with torch.no_grad():
        ours = model(faces).numpy()
    assert np.abs(ours - reference).max() <= 1e-4


@pytest.mark.real
def test_build_and_spec(graph_path):
    spec = facenet.SPEC
    assert spec.template.shape == (5, 2) and spec.input_size == (160, 160)
    assert (spec.template >= 0).all() and (spec.template < 160).all()
    assert spec.weights == ("facenet_casia",)
    assert isinstance(facenet.build(), torch.nn.Module)
