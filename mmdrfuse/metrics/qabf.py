"""Qabf: gradient-based fusion performance (Xydeas and Petrovic, 2000), Piella-Heijmans constants.

Edge strength and orientation from Sobel responses (true 2-D convolution, zero padding, same size)
with :math:`h_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]` and :math:`h_y = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]`:

.. math::
    g = \\sqrt{s_x^2 + s_y^2}, \\quad \\alpha = \\arctan(s_y / s_x)\\ (\\pi/2 \\text{ where } s_x = 0)

For a source S and the fused image F, the relative strength and orientation and the preserved
edge information are

.. math::
    G^{SF} = \\frac{\\min(g_S, g_F)}{\\max(g_S, g_F)}\\ (g_F \\text{ where } g_S = g_F), \\quad
    A^{SF} = 1 - \\frac{|\\alpha_S - \\alpha_F|}{\\pi / 2}, \\\\
    Q^{SF} = \\frac{T_g}{1 + e^{k_g (G^{SF} - D_g)}} \\cdot \\frac{T_a}{1 + e^{k_a (A^{SF} - D_a)}}, \\quad
    Q^{AB/F} = \\frac{\\sum_p Q^{AF} g_A + Q^{BF} g_B}{\\sum_p g_A + g_B}

with :math:`T_g = 0.9994, k_g = -15, D_g = 0.5, T_a = 0.9879, k_a = -22, D_a = 0.8`. The
"g_F where g_S = g_F" rule is the widely used evaluator's (it makes G = 0 where both are 0;
those pixels carry weight 0 anyway). When neither source has any edge (both constant) the
ratio is 0 / 0; Qabf is then defined as 0.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from mmdrfuse.metrics import filters
from mmdrfuse.metrics.filters import separable_filter, zero_padded_bands
from mmdrfuse.metrics.no_reference import check_gray_batch

STRENGTH_T, STRENGTH_K, STRENGTH_D = 0.9994, -15.0, 0.5
ORIENTATION_T, ORIENTATION_K, ORIENTATION_D = 0.9879, -22.0, 0.8


def sobel_strength_orientation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge strength g and orientation alpha in (-pi/2, pi/2] of every plane of (B, C, H, W) images.

    The responses are exact in float64 (small integers for 8-bit images); strength and
    orientation are returned in float32, whose rounding (1e-7 relative) is far below the
    metric's resolution and which is several times faster for sqrt and atan on the CPU.
    'Valid' windows: the output is (B, C, H - 2, W - 2); :func:`qabf` passes zero-padded bands.
    """
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    # Convolution = correlation with the kernel rotated by 180 degrees: h_x -> [1,2,1]^T [1,0,-1], h_y -> [-1,0,1]^T [1,2,1].
    derivative = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    images = images.to(torch.float64)
    response_x = separable_filter(images, smooth, derivative).to(torch.float32)
    response_y = separable_filter(images, -derivative, smooth).to(torch.float32)
    strength = torch.sqrt(response_x.square().addcmul_(response_y, response_y))
    # atan(y / x) = atan2(y sgn(x), |x|), which torch computes faster; x = 0 gives pi / 2 by convention.
    orientation = torch.atan2(response_y.mul_(response_x.sign()), response_x.abs())
    orientation.masked_fill_(response_x == 0, math.pi / 2)
    return strength, orientation


def edge_preservation(
    source_strength: torch.Tensor, source_orientation: torch.Tensor, fused_strength: torch.Tensor, fused_orientation: torch.Tensor
) -> torch.Tensor:
    """Per-pixel preserved edge information :math:`Q^{SF} \\in [0, 1)` (shapes broadcast)."""
    ratio = torch.minimum(source_strength, fused_strength) / torch.maximum(source_strength, fused_strength)
    relative_strength = torch.where(source_strength == fused_strength, fused_strength, ratio)
    # The sigmoid argument -k_a (A - D_a), with A = 1 - |da| / (pi / 2), as one affine map of |da|.
    orientation_logit = (source_orientation - fused_orientation).abs_().mul_(ORIENTATION_K * 2 / math.pi)
    orientation_logit.add_(-ORIENTATION_K * (1 - ORIENTATION_D))
    strength_term = torch.sigmoid(relative_strength.mul_(-STRENGTH_K).add_(STRENGTH_K * STRENGTH_D))
    return strength_term.mul_(torch.sigmoid(orientation_logit)).mul_(STRENGTH_T * ORIENTATION_T)


def qabf(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Qabf of (B, 1, H, W) images on the 0..255 scale: (B,)."""
    check_gray_batch(fused, ir, vi)
    if filters.use_opencv(fused):
        planes = [[image[i, 0].detach().to(torch.float64).numpy() for image in (fused, ir, vi)] for i in range(fused.shape[0])]
        values = [qabf_numpy(*triple) for triple in planes]
        return torch.tensor(values, dtype=torch.float64)
    numerator = fused.new_zeros(fused.shape[0], dtype=torch.float64)
    denominator = fused.new_zeros(fused.shape[0], dtype=torch.float64)
    bands = zip(*(zero_padded_bands(image, 1) for image in (ir, vi, fused)))
    for band in bands:
        strength, orientation = sobel_strength_orientation(torch.cat(band, 1))
        preserved = edge_preservation(strength[:, :2], orientation[:, :2], strength[:, 2:], orientation[:, 2:])
        weights = strength[:, :2]
        numerator += (preserved * weights).sum((1, 2, 3), dtype=torch.float64)
        denominator += weights.sum((1, 2, 3), dtype=torch.float64)
    return torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(torch.float64).tiny), 0.0)


def _sobel_numpy(rows: np.ndarray, strength: np.ndarray, orientation: np.ndarray, scratch: np.ndarray, right_angle: np.ndarray) -> None:
    """:func:`sobel_strength_orientation` of the inner rows of a float32 (h + 2, W) band, into (h, W) buffers.

    Columns are zero-padded (the 'same' convolution's rule); the band's first and last rows are
    context. ``right_angle``: a (h, W) plane of pi / 2.
    """
    height = rows.shape[0] - 2
    # cv2.Sobel correlates: its x response is -s_x (h_x convolved), its y response is s_y.
    response_x = cv2.Sobel(rows, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_CONSTANT)[1:-1]
    response_y = cv2.Sobel(rows, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_CONSTANT)[1:-1]
    # Correctly rounded sqrt of the exact sum of squares (cv2.magnitude is not), so that equal
    # strengths in float64 stay equal for the g_S = g_F rule.
    square = np.square(response_y, out=scratch[:height])
    square += np.square(response_x, out=strength[:height])
    np.sqrt(square, out=strength[:height])
    # atan(s_y / s_x) with s_x = -response_x; where s_x = 0 (ratio +-inf or NaN) pi / 2.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.divide(response_y, response_x, out=response_y)
    np.negative(ratio, out=ratio)
    np.arctan(ratio, out=orientation[:height])
    x_is_zero = cv2.compare(response_x, 0.0, cv2.CMP_EQ, dst=scratch[:height].view(np.uint8)[:, : response_x.shape[1]])
    cv2.copyTo(right_angle[:height], x_is_zero, orientation[:height])


def _zero_padded_rows(images, band: int):
    """``rows(i, start, count)``: rows start - 1 .. start + count of images[i] with a zero row above
    and below the image, as the float32 rows :func:`_sobel_numpy` takes (uint8 where all images
    are uint8: the same exact integer responses, faster). uint8 images are read in place but for
    the first and last band, which go through a small zeroed buffer."""
    height, width = images[0].shape
    if not all(image.dtype == np.uint8 for image in images):
        padded = np.zeros((len(images), height + 2, width), np.float32)
        for plane, image in zip(padded, images):
            plane[1:-1] = image
        return lambda i, start, count: padded[i, start : start + count + 2]
    edge = np.empty((band + 2, width), np.uint8)

    def rows(i, start, count):
        if start >= 1 and start + count < height:
            return images[i][start - 1 : start + count + 1]
        out = edge[: count + 2]
        out[:] = 0
        first, last = max(start - 1, 0), min(start + count + 1, height)  # image rows that exist
        out[first - (start - 1) : last - (start - 1)] = images[i][first:last]
        return out

    return rows


def qabf_numpy(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Qabf of one triple of (H, W) float64 arrays on the CPU, over bands of rows.

    The images are rounded to float32, which is exact for 8-bit values (the evaluation protocol
    scores saved 8-bit images): Sobel responses are then exact integers, equal strengths stay
    equal and zero responses stay zero, and the result equals the float64 reference to ~1e-9.
    For non-integer images the reference itself is ill-conditioned where s_x is rounding noise
    (atan(s_y / s_x) flips between +-pi / 2), so implementations differ there at ~1e-4 whatever
    their precision. Per-pixel terms in float32, sums in float64.
    """
    return qabf_numpy_many([(fused, ir, vi)])[0]


def qabf_numpy_many(triples) -> list:
    """:func:`qabf_numpy` of each (fused, ir, vi) triple of (H, W) arrays of one size, in one pass.

    An array object that appears more than once (the infrared plane of every channel of an RGB
    image whose channels are equal) has its strength and orientation computed once per band; each
    triple's sums are those :func:`qabf_numpy` forms for it alone, so the values are the same.
    uint8 arrays go to the Sobel filter as they are (the same exact integer responses, faster).
    """
    if not triples:
        return []
    distinct: dict = {}
    for triple in triples:
        for image in triple:
            distinct.setdefault(id(image), image)
    index = {key: i for i, key in enumerate(distinct)}
    images = list(distinct.values())
    height, width = triples[0][0].shape
    if any(image.shape != (height, width) for image in images):
        raise ValueError(f"qabf expects (H, W) arrays of one shape, got {[image.shape for image in images]}")
    band = max(8, filters.BAND_PIXELS // width)
    rows_with_context = _zero_padded_rows(images, band)
    strength, orientation = np.empty((2, len(images), band, width), np.float32)
    right_angle = np.full((band, width), math.pi / 2, np.float32)
    larger, relative, scratch = np.empty((3, band, width), np.float32)
    equal = np.empty((band, width), np.uint8)
    numerators, denominators = [0.0] * len(triples), [0.0] * len(triples)
    for start in range(0, height, band):
        rows = min(band, height - start)
        for i in range(len(images)):
            _sobel_numpy(rows_with_context(i, start, rows), strength[i], orientation[i], scratch, right_angle)
        for t, triple in enumerate(triples):
            fused, *sources = (index[id(image)] for image in triple)
            fused_strength, fused_orientation = strength[fused, :rows], orientation[fused, :rows]
            for source in sources:
                source_strength, big, ratio, same = strength[source, :rows], larger[:rows], relative[:rows], equal[:rows]
                np.maximum(source_strength, fused_strength, out=big)
                np.minimum(source_strength, fused_strength, out=ratio)
                # 0 / 0 where both are 0, and min / max = 1 wherever they are equal: both become g_F.
                with np.errstate(invalid="ignore"):
                    ratio /= big
                cv2.compare(source_strength, fused_strength, cv2.CMP_EQ, dst=same)
                cv2.copyTo(fused_strength, same, ratio)
                # Q = T_g T_a / ((1 + exp(k_g (G - D_g))) (1 + exp(k_a (A - D_a)))), A = 1 - |da| / (pi / 2)
                ratio *= np.float32(STRENGTH_K)
                ratio -= np.float32(STRENGTH_K * STRENGTH_D)
                strength_exp = cv2.exp(ratio, dst=ratio)
                orientation_exp = cv2.absdiff(orientation[source, :rows], fused_orientation, dst=big)
                orientation_exp *= np.float32(-ORIENTATION_K * 2 / math.pi)
                orientation_exp += np.float32(ORIENTATION_K * (1 - ORIENTATION_D))
                cv2.exp(orientation_exp, dst=orientation_exp)
                strength_exp += 1.0
                orientation_exp += 1.0
                strength_exp *= orientation_exp
                np.divide(source_strength, strength_exp, out=strength_exp)
                numerators[t] += STRENGTH_T * ORIENTATION_T * cv2.sumElems(strength_exp)[0]
                denominators[t] += cv2.sumElems(source_strength)[0]
    return [numerator / denominator if denominator > 0 else 0.0 for numerator, denominator in zip(numerators, denominators)]
