"""Image augmentations drawn per sample on the device, shared by the strategies that need them.

``augmented_view`` is OnPro's view (the official OnPro/OCM ``transform``: random horizontal
flip, random grayscale, random resized crop); ``SCRAugment`` is SCR's (Mai et al. 2021), the
same crop, flip and grayscale at SCR's settings followed by a colour jitter. The two differ
value by value, so each strategy keeps its own settings:

| | OnPro (``augmented_view`` defaults) | SCR (``SCRAugment`` defaults) |
| --- | --- | --- |
| resized crop area | U(0.3, 1) | U(0.2, 1) |
| grayscale probability (3 channels) | 0.25 | 0.2 |
| colour jitter (brightness, contrast, saturation) | none | +-0.4, probability 0.8 |

Inputs are (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images: x (N, 3, H, W) -> (N, 1, H, W)."""
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def augmented_view(x: torch.Tensor, crop_scale: tuple[float, float] = (0.3, 1.0),
                   gray_p: float = 0.25, ratio: tuple[float, float] = (3 / 4, 4 / 3)
                   ) -> torch.Tensor:
    """OnPro's view, the official OnPro/OCM ``transform``: random horizontal flip, random
    grayscale (skipped for one-channel inputs), random resized crop.

    x: (N, C, H, W) in [0, 1] -> (N, C, H, W); parameters drawn per sample, applied
    batch-wise by one ``grid_sample`` (flip and crop composed into one affine map,
    which equals the official two-step flip-then-crop). Crop: area ~ U(crop_scale),
    log aspect ratio ~ U(log ratio), first of 10 tries per sample that fits, else the
    whole image; integer pixel size and offset as in the official sampler.
    """
    n, c, h, w = x.shape
    dev = x.device
    if c == 3 and gray_p > 0:
        gray = grayscale(x)
        mask = (torch.rand(n, 1, 1, 1, device=dev) < gray_p).to(x.dtype)
        x = x * (1 - mask) + gray.expand_as(x) * mask
    tries = 10
    area = torch.empty(n, tries, device=dev).uniform_(*crop_scale) * (h * w)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(torch.empty(n, tries, device=dev).uniform_(*log_ratio))
    cw = torch.round(torch.sqrt(area * aspect))
    ch = torch.round(torch.sqrt(area / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    found = ok.any(1)
    first = ok.float().argmax(1, keepdim=True)  # first fitting try (0 when none fits)
    cw = torch.where(found, cw.gather(1, first).squeeze(1), torch.full((n,), float(w), device=dev))
    ch = torch.where(found, ch.gather(1, first).squeeze(1), torch.full((n,), float(h), device=dev))
    # offsets: integers in [size - full, full - size], in units of the full size
    bx = (torch.floor(torch.rand(n, device=dev) * (2 * (w - cw) + 1)) + cw - w) / w
    by = (torch.floor(torch.rand(n, device=dev) * (2 * (h - ch) + 1)) + ch - h) / h
    sign = torch.randint(0, 2, (n,), device=dev).to(x.dtype) * 2 - 1
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = sign * cw / w
    theta[:, 0, 2] = sign * bx
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = by
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


class SCRAugment:
    """SCR's second view of each image, drawn per sample on the device (Mai et al. 2021).

    The official SCR code augments the stream + memory batch with kornia's
    RandomResizedCrop(scale 0.2-1), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    and RandomGrayscale(p=0.2). x: (B, C, H, W) in [0, 1] -> (B, C, H, W); other inputs pass
    through unchanged. Crop, flip and grayscale are ``augmented_view``; then,
    with probability ``jitter_p`` per sample, brightness, contrast and (3 channels) saturation
    are each scaled by a factor ~ U(1 - jitter, 1 + jitter), in that order, as torchvision's
    ColorJitter does. Departures: hue is not jittered, and the jitter comes after the grayscale
    (the same result up to clipping: the three adjustments commute with a linear grayscale).
    """

    def __init__(self, crop_scale: tuple[float, float] = (0.2, 1.0), jitter: float = 0.4,
                 jitter_p: float = 0.8, gray_p: float = 0.2) -> None:
        self.crop_scale, self.jitter, self.jitter_p, self.gray_p = tuple(crop_scale), jitter, jitter_p, gray_p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return x
        return self.color_jitter(augmented_view(x, self.crop_scale, self.gray_p))

    def color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample brightness, contrast, saturation jitter of x: (B, C, H, W) in [0, 1]."""
        n, c = x.shape[:2]

        def factor() -> torch.Tensor:
            return torch.empty(n, 1, 1, 1, device=x.device).uniform_(1 - self.jitter, 1 + self.jitter)

        def gray(v: torch.Tensor) -> torch.Tensor:
            return grayscale(v) if c == 3 else v

        out = (x * factor()).clamp(0, 1)
        mean = gray(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (mean + factor() * (out - mean)).clamp(0, 1)
        if c == 3:
            g = gray(out)
            out = (g + factor() * (out - g)).clamp(0, 1)
        apply = torch.rand(n, 1, 1, 1, device=x.device) < self.jitter_p
        return torch.where(apply, out, x)
