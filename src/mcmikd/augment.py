"""Batched augmentation and normalisation on the training device.

`random_crop_flip` reproduces torchvision's RandomCrop(size, padding=p) (zero padding of the raw image, as
RepDistiller uses) and RandomHorizontalFlip for a whole uint8 batch at once, with an explicit generator so a
resumed run draws exactly the same crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random `padding`-pixel crops (zero padded) and optional horizontal flips of a batch (B, C, H, W)."""
    b, _, h, w = images.shape
    device = images.device
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=device)
        rows = (torch.arange(h, device=device).unsqueeze(0) + offsets[0].unsqueeze(1))  # (B, H)
        cols = (torch.arange(w, device=device).unsqueeze(0) + offsets[1].unsqueeze(1))  # (B, W)
        batch_idx = torch.arange(b, device=device).view(b, 1, 1)
        # advanced indexing gives (B, H, W, C); move channels back
        images = padded.permute(0, 2, 3, 1)[batch_idx, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(b, generator=generator, device=device) < 0.5
        images = torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
    return images


class Normalizer:
    """uint8 images -> float, scaled to [0, 1] and standardised with per-channel mean and std."""

    def __init__(self, mean, std, device, channels_last: bool = False):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = (images.float() / 255.0 - self.mean) / self.std
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out
