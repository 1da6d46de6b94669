"""The one place that decides where torch math runs."""

from __future__ import annotations

import os

import torch


def torch_device() -> torch.device:
    """CUDA when torch sees a GPU, unless TROVE_DEVICE forces one ("cpu", "cuda", "cuda:1")."""
    forced = os.environ.get("TROVE_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
