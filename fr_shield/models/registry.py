"""Model registry: name -> (spec, constructor), after timm's pattern.

Each built-in model lives in its own module that defines ``SPEC`` (a ``ModelSpec``) and
``build(cache_dir=None) -> torch.nn.Module``. Modules are imported only when their model is
asked for. ``onnx:<path>`` names a user's own ONNX model described by a spec file beside it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch

from fr_shield.core.errors import ConfigError
from fr_shield.models import onnx_user
from fr_shield.models.spec import ModelSpec

BUILTIN: dict[str, str] = {
    "sface": "fr_shield.models.sface",
    "dlib_resnet": "fr_shield.models.dlib_resnet",
    "facenet_casia": "fr_shield.models.facenet",
    "mobilefacenet_fp": "fr_shield.models.mobilefacenet_fp",
    "mobilefacenet_expo": "fr_shield.models.mobilefacenet_expo",
}
ONNX_PREFIX = "onnx:"


def available() -> list[str]:
    return sorted(BUILTIN)


class UnknownModel(ConfigError, KeyError):
    """A model name that is neither a registry model nor an existing ``onnx:<path>``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _module_for(name: str):
    if name not in BUILTIN:
        raise UnknownModel(f"unknown face-recognition model '{name}'; choose one of: {', '.join(available())}, "
                           f"or {ONNX_PREFIX}<path to .onnx> (its spec: <path minus .onnx>.yaml beside it)")
    return importlib.import_module(BUILTIN[name])


def check_names(names: Sequence[str]) -> list[str]:
    """``names`` if every one is a registry model or an existing ``onnx:`` file; else one clear error."""
    for name in names:
        if name.startswith(ONNX_PREFIX):
            path = Path(name[len(ONNX_PREFIX):]).expanduser()
            if not path.is_file():
                raise UnknownModel(f"model file {path} (from '{name}') does not exist")
        else:
            _module_for(name)
    return list(names)


def get_spec(name: str) -> ModelSpec:
    if name.startswith(ONNX_PREFIX):
        return onnx_user.load_spec(Path(name[len(ONNX_PREFIX):]))
    return _module_for(name).SPEC


def create(name: str, cache_dir: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A frozen model in eval mode with ``.spec`` set; gradients still flow to its input."""
    if name.startswith(ONNX_PREFIX):
        model = onnx_user.build(Path(name[len(ONNX_PREFIX):]))
    else:
        model = _module_for(name).build(cache_dir)
    model.spec = get_spec(name)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device)
