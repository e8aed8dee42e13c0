"""Comparison metrics between a spiking quantity ``a`` and its rate reference ``b`` (same shape)."""
from __future__ import annotations

import torch
from torch import Tensor


def _check(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"cannot compare tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return a.detach().double().reshape(-1), b.detach().double().reshape(-1)


def cosine_similarity(a: Tensor, b: Tensor) -> float:
    """``<a, b> / (|a| |b|)`` (``0`` if either is all-zero)."""
    a, b = _check(a, b)
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else 0.0


def relative_error(a: Tensor, b: Tensor) -> float:
    """``|a - b| / |b|`` in the Frobenius norm (``inf`` if ``b`` is all-zero and ``a`` is not)."""
    a, b = _check(a, b)
    reference = b.norm()
    difference = (a - b).norm()
    if reference == 0:
        return 0.0 if difference == 0 else float("inf")
    return float(difference / reference)


def sign_agreement(a: Tensor, b: Tensor) -> float:
    """Fraction of entries with ``sign(a) == sign(b)`` among those where ``b != 0``."""
    a, b = _check(a, b)
    mask = b != 0
    if not bool(mask.any()):
        return 1.0
    return float((torch.sign(a[mask]) == torch.sign(b[mask])).double().mean())


def compare(a: Tensor, b: Tensor) -> dict[str, float]:
    """``{"cosine", "relative_error", "sign_agreement"}`` of ``a`` against the reference ``b``."""
    return {"cosine": cosine_similarity(a, b), "relative_error": relative_error(a, b),
            "sign_agreement": sign_agreement(a, b)}
