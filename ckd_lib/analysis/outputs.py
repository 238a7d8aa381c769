"""A model's logits and penultimate (pooled) features over a dataset, as numpy arrays."""

from __future__ import annotations

import numpy as np
import torch

from ckd_lib.data import ImageDataset, make_loader


@torch.no_grad()
def collect_outputs(model: torch.nn.Module, dataset: ImageDataset, device: str = "auto",
                    batch_size: int = 500, features: bool = True) -> dict[str, np.ndarray]:
    """``{"logits": [N, C], "features": [N, D], "labels": [N]}`` in the dataset's order
    (test mode: no augmentation). ``features`` are ``forward_features``' ``pooled_feat``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = model.to(device).eval()
    loader = make_loader("gpu", dataset, batch_size, train=False, seed=0, device=device)
    loader.set_epoch(0)
    logits, feats, labels = [], [], []
    for x, y in loader:
        if features:
            out, extra = model.forward_features(x)
            feats.append(extra["pooled_feat"].float().cpu())
        else:
            out = model(x)
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    result = {"logits": torch.cat(logits).numpy(), "labels": torch.cat(labels).numpy()}
    if features:
        result["features"] = torch.cat(feats).flatten(1).numpy()
    return result
