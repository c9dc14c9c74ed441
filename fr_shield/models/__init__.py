"""Face-recognition models: preprocessing specs, a registry, and native torch ports."""

from fr_shield.models.registry import available, create, get_spec
from fr_shield.models.spec import ModelSpec

__all__ = ["ModelSpec", "available", "create", "get_spec"]
