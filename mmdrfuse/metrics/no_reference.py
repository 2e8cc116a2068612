"""Metrics of the fused image alone: SD, EN, SF, AG.

Every function takes a (B, 1, H, W) float tensor of gray values on the 0..255 scale and
returns a (B,) float64 tensor, one value per image.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from mmdrfuse.metrics import filters


def check_gray_batch(*images: torch.Tensor, min_size: int = 2) -> None:
    """Raise ValueError unless all ``images`` are float (B, 1, H, W) tensors of one shape with H, W >= ``min_size``."""
    first = images[0]
    for image in images:
        if image.ndim != 4 or image.shape[1] != 1 or not image.is_floating_point():
            raise ValueError(f"expected float (B, 1, H, W) gray images, got {image.dtype} of shape {tuple(image.shape)}")
        if image.shape != first.shape:
            raise ValueError(f"images differ in shape: {tuple(first.shape)} and {tuple(image.shape)}")
    if min(first.shape[-2:]) < min_size:
        raise ValueError(f"images of size {tuple(first.shape[-2:])} are smaller than {min_size}x{min_size}")


def standard_deviation(fused: torch.Tensor) -> torch.Tensor:
    """SD: population standard deviation of the pixel values.

    .. math:: \\mathrm{SD} = \\sqrt{\\tfrac{1}{HW} \\sum_p (F(p) - \\bar F)^2}
    """
    check_gray_batch(fused, min_size=1)
    return fused.flatten(1).to(torch.float64).std(1, correction=0)


def entropy(fused: torch.Tensor) -> torch.Tensor:
    """EN: Shannon entropy in bits of the 256-bin histogram of the rounded image.

    .. math:: \\mathrm{EN} = -\\sum_{l=0}^{255} p_l \\log_2 p_l, \\quad p_l = \\#\\{p : \\mathrm{round}(F(p)) = l\\} / (HW)

    Values are rounded half to even and clamped to 0..255. A constant image has EN = 0.
    """
    check_gray_batch(fused, min_size=1)
    if fused.device.type == "cpu" and fused[0].numel() < 2**24:  # OpenCV's float32 counts stay exact
        values = []
        for image in fused[:, 0].detach().to(torch.float64).numpy():
            levels = filters.uint8_if_exact(image)
            if levels is None:
                break
            counts = cv2.calcHist([levels], [0], None, [256], [0, 256]).ravel().astype(np.float64)
            p = counts[counts > 0] / levels.size
            values.append(float(-(p * np.log2(p)).sum()))
        else:
            return torch.tensor(values, dtype=torch.float64)
    b = fused.shape[0]
    levels = fused.round().clamp_(0, 255).to(torch.int32).flatten(1)
    if b > 1:
        levels += 256 * torch.arange(b, device=fused.device, dtype=torch.int32)[:, None]
    counts = torch.bincount(levels.flatten(), minlength=256 * b).reshape(b, 256).to(torch.float64)
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.log2(torch.where(p > 0, p, 1.0))).sum(1)


def spatial_frequency(fused: torch.Tensor) -> torch.Tensor:
    """SF: root of the summed mean squared horizontal and vertical neighbour differences.

    .. math::
        \\mathrm{SF} = \\sqrt{\\operatorname{mean}_{i,j} (F_{i,j+1} - F_{i,j})^2 + \\operatorname{mean}_{i,j} (F_{i+1,j} - F_{i,j})^2}
    """
    check_gray_batch(fused)
    fused = fused.to(torch.float64)
    if fused.device.type == "cpu":
        # Squared differences summed in float64 without temporaries.
        powers = []
        for image in fused[:, 0].detach().numpy():
            height, width = image.shape
            row_power = cv2.norm(image[:, 1:], image[:, :-1], cv2.NORM_L2SQR) / (height * (width - 1))
            column_power = cv2.norm(image[1:], image[:-1], cv2.NORM_L2SQR) / ((height - 1) * width)
            powers.append(row_power + column_power)
        return torch.tensor(powers, dtype=torch.float64).sqrt()
    horizontal = (fused[..., :, 1:] - fused[..., :, :-1]).flatten(1)
    vertical = (fused[..., 1:, :] - fused[..., :-1, :]).flatten(1)
    row_power = torch.linalg.vector_norm(horizontal, dim=1).square() / horizontal.shape[1]
    column_power = torch.linalg.vector_norm(vertical, dim=1).square() / vertical.shape[1]
    return torch.sqrt(row_power + column_power)


def average_gradient(fused: torch.Tensor) -> torch.Tensor:
    """AG: mean of the root mean square of the two directional derivatives.

    .. math:: \\mathrm{AG} = \\operatorname{mean}_p \\sqrt{(G_x(p)^2 + G_y(p)^2) / 2}

    :math:`G_x, G_y` are central differences :math:`(F_{j+1} - F_{j-1}) / 2` inside the image and
    one-sided differences on the first and last rows and columns (``numpy.gradient``).
    """
    check_gray_batch(fused)
    if fused.device.type == "cpu":
        values = [_average_gradient_numpy(image) for image in fused[:, 0].detach().to(torch.float64).numpy()]
        return torch.tensor(values, dtype=torch.float64)
    grad_y, grad_x = torch.gradient(fused.to(torch.float64), dim=(-2, -1))
    # float32 square root (exact enough: 1e-7 relative) is an order of magnitude faster than float64 on the CPU.
    magnitude = torch.sqrt(grad_x.square_().addcmul_(grad_y, grad_y).mul_(0.5).to(torch.float32))
    return magnitude.flatten(1).sum(1, dtype=torch.float64) / magnitude[0].numel()


def _average_gradient_numpy(image: np.ndarray) -> float:
    """AG of one (H, W) float64 array: float32 gradient magnitudes (differences exact in float32
    for 8-bit values, else taken in float64), float64 sum."""
    image = filters.float32_if_exact(image)
    difference = np.array([[-0.5, 0.0, 0.5]])
    # Replicated borders give half the one-sided difference on the first and last row / column.
    grad_x = cv2.sepFilter2D(image, -1, difference, np.ones((1, 1)), borderType=cv2.BORDER_REPLICATE)
    grad_y = cv2.sepFilter2D(image, -1, np.ones((1, 1)), difference.T, borderType=cv2.BORDER_REPLICATE)
    grad_x[:, [0, -1]] *= 2.0
    grad_y[[0, -1]] *= 2.0
    grad_x, grad_y = grad_x.astype(np.float32, copy=False), grad_y.astype(np.float32, copy=False)
    square = np.square(grad_x, out=grad_x)
    square += np.square(grad_y, out=grad_y)
    return cv2.sumElems(np.sqrt(square, out=square))[0] / (math.sqrt(2.0) * image.size)
