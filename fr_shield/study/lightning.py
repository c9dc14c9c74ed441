"""Lightning wrapper: the face protector (surrogate ensemble and attack loop) as one LightningModule.

``Trainer.predict`` protects each batch of photos in ``predict_step`` (``FaceProtector.perturb``:
regions, mask, attack; the per-face budget is applied by the caller, on the cached output); Lightning supplies device
placement, precision and the progress bar. Predict runs under ``torch.inference_mode`` by
default, which forbids the gradients the attack needs: the Trainer must be built with
``inference_mode=False`` (``make_trainer`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fr_shield.attacks.protector import FaceProtector


class PhotoBatchDataset(Dataset):
    """Pre-grouped batches of same-sized photos: ``(keys, images [B,3,H,W], faces per image)``."""

    def __init__(self, batches: list[tuple[list, torch.Tensor, list]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]


class ProtectionModule(L.LightningModule):
    def __init__(self, protector: FaceProtector):
        super().__init__()
        self.protector = protector
        # Registered as submodules so Lightning moves the surrogates and LPIPS to the device.
        self.objective = protector.attack.objective
        self.metric = protector.metric

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        # Only the pixels go to the accelerator: landmarks stay on the host, where alignment
        # solves each face's similarity transform with NumPy.
        keys, images, faces = batch
        return keys, images.to(device), [[np.asarray(face) for face in photo] for photo in faces]

    def predict_step(self, batch, batch_idx: int):
        keys, images, faces = batch
        started = time.perf_counter()
        regions = self.protector.perturb(images, faces)
        protected = torch.cat([FaceProtector.paste(images[i:i + 1], parts) for i, parts in enumerate(regions)])
        seconds = time.perf_counter() - started
        return {"keys": keys, "protected": protected.cpu(), "regions": regions,
                "seconds_per_image": seconds / max(len(keys), 1)}


class BatchSink(L.Callback):
    """Hands each finished batch to ``on_batch`` and lets Lightning forget it (no list of all)."""

    def __init__(self, on_batch: Callable[[dict], None]):
        self.on_batch = on_batch

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.on_batch(outputs)


def make_trainer(device: torch.device, progress: bool = True, callbacks=()) -> L.Trainer:
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, inference_mode=False, logger=False,
        enable_progress_bar=progress, enable_model_summary=False, enable_checkpointing=False, callbacks=list(callbacks),
    )


def run_protection(module: ProtectionModule, batches: list, device: torch.device, on_batch: Callable[[dict], None],
                   progress: bool = True) -> None:
    """Protect every batch; each result goes to ``on_batch`` as soon as its batch ends (the
    per-step curves travel in the results, into each photo's quality record)."""
    loader = DataLoader(PhotoBatchDataset(batches), batch_size=None, shuffle=False)
    make_trainer(device, progress, [BatchSink(on_batch)]).predict(module, loader, return_predictions=False)
