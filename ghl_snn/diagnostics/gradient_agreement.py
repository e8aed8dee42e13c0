"""Does the Hebbian magnitude ``|E|`` say where the gradient is large?  Per plastic convolution, the cosine of the
sign-only update (GHL paper Table 5), of GHL's ``sign(g) ⊙ |E|`` (Eq. 6 with the SWTA-Oja eligibility of Eq. 4) and
of its per-channel normalised form with the true gradient ``g = dL/dW``, and the correlation of ``|E|`` with ``|g|``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..rules.base import normalize_eligibility
from ..rules.swta_oja import swta_oja
from ._observer import flat_cosine


def gradient_agreement(model: nn.Module, batches: list[tuple[Tensor, Tensor]],
                       taus: dict[str, float]) -> dict[str, dict[str, float]]:
    """How well each update direction follows the true gradient, per plastic layer, averaged over ``batches``.

    For every batch: ``g = dL/dW`` (cross-entropy, backprop) and the raw SWTA-Oja eligibility ``E`` (GHL Eq. 4)
    of the layer ``name`` (softmax temperature ``taus[name]``).  Cosines with ``g`` (scale-free, so the same for
    every per-layer normalisation of ``E``)::

        cos_sign     = cos(sign(g), g)                   sign-only (Table 5)
        cos_ghl      = cos(sign(g) ⊙ |E|, g)             GHL with any per-layer normalisation (max, mean, rms)
        cos_channel  = cos(sign(g) ⊙ |E_k|/max|E_k|, g)  GHL with per-output-channel normalisation
        corr_abs     = Pearson correlation of |E| and |g| over the layer's entries
        mean_over_max = mean|E| / max|E|                  GHL's mean step relative to sign-only at equal lr
    """
    modules = dict(model.named_modules())
    captured: dict[str, tuple[Tensor, Tensor]] = {}
    handles = [modules[name].register_forward_hook(
        lambda module, args, output, name=name: captured.__setitem__(name, (args[0].detach(), output.detach())))
        for name in taus]
    sums: dict[str, dict[str, float]] = {name: {} for name in taus}
    try:
        for images, labels in batches:
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(images), labels).backward()
            for name, tau in taus.items():
                module = modules[name]
                x, y = captured[name]
                grad = module.weight.grad.detach().double()
                eligibility = swta_oja(x, y, module.weight, tau, module.stride, module.padding,
                                       module.dilation).double()
                magnitude = eligibility.abs()
                per_channel = normalize_eligibility(eligibility, "channel").abs()
                pair = torch.stack([magnitude.flatten(), grad.abs().flatten()])
                values = {"cos_sign": flat_cosine(torch.sign(grad), grad),
                          "cos_ghl": flat_cosine(torch.sign(grad) * magnitude, grad),
                          "cos_channel": flat_cosine(torch.sign(grad) * per_channel, grad),
                          "corr_abs": float(torch.corrcoef(pair)[0, 1]),
                          "mean_over_max": float(magnitude.mean() / magnitude.amax())}
                for key, value in values.items():
                    sums[name][key] = sums[name].get(key, 0.0) + value / len(batches)
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return sums
