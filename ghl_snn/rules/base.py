"""The eligibility-rule interface shared by every local plasticity term.

An eligibility rule maps what a synapse can see locally -- the pre-synaptic input ``x``, the post-synaptic
pre-activation ``y = W x`` and the weight ``W`` itself -- to a tensor ``E`` shaped like ``W`` (DESIGN.md §1,
factors 1 and 2 of the three-factor rule).  Sign convention: ``E`` is the direction a purely Hebbian learner
would *add* to the weight (``W <- W + eta * E``).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Normalization = Literal["max", "mean", "rms", "channel", "channel-mean"] | None

#: ``"max"`` is the GHL reference; the others keep the Hebbian *shape* of ``E`` but change its *scale*
SUPPORTED_NORMALIZATIONS = ("max", "mean", "rms", "channel", "channel-mean", None)


def check_tau(tau: float) -> float:
    """Return ``tau`` as a float, raising ``ValueError`` unless it is a finite number > 0."""
    tau_value = float(tau)
    if not tau_value > 0 or tau_value == float("inf"):
        raise ValueError(f"softmax temperature tau must be a finite number > 0, got {tau!r}")
    return tau_value


def check_normalization(normalize: Normalization) -> Normalization:
    """Validate a normalisation mode (one of ``SUPPORTED_NORMALIZATIONS``)."""
    if normalize not in SUPPORTED_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {SUPPORTED_NORMALIZATIONS}, got {normalize!r}")
    return normalize


def normalize_eligibility(eligibility: Tensor, normalize: Normalization) -> Tensor:
    """Per-layer (or per-output-neuron) normalisation of an eligibility tensor ``E`` shaped like the weight.

    The GHL update is ``M ⊙ |E|`` (GHL paper Eq. 6); normalising ``E`` sets the size of the step while the
    Hebbian *shape* (which synapses move more than others) is kept.  With ``s`` the scale below, ``E / s``:

    * ``"max"``: ``s = max|E|`` over the whole layer (the GHL reference implementation); ``|E/s| <= 1`` and most
      entries are a small fraction of 1.
    * ``"mean"``: ``s = mean|E|`` over the layer, so ``mean|E/s| = 1`` -- the same mean step as the sign-only
      ablation (``|E| := 1``) at the same learning rate.
    * ``"rms"``: ``s = sqrt(mean E²)`` over the layer, so ``mean (E/s)² = 1``.
    * ``"channel"``: ``s_k = max_{i} |E_{k i}|`` per output neuron / channel ``k`` (the first weight dimension;
      ``i`` runs over every input index and kernel position), so every neuron's largest entry is 1.
    * ``"channel-mean"``: ``s_k = mean_i |E_{k i}|`` per output neuron / channel.
    * ``None``: ``E`` unchanged.

    A zero scale (an all-zero layer or neuron) leaves those entries zero.
    """
    check_normalization(normalize)
    if normalize is None:
        return eligibility
    magnitude = eligibility.abs()
    if normalize in ("channel", "channel-mean"):
        per_row = magnitude.reshape(magnitude.shape[0], -1) if magnitude.dim() > 1 else magnitude.reshape(-1, 1)
        scale = per_row.amax(dim=1) if normalize == "channel" else per_row.mean(dim=1)
        scale = scale.reshape((-1,) + (1,) * (eligibility.dim() - 1)) if eligibility.dim() > 1 else scale
    elif normalize == "max":
        scale = magnitude.amax()
    elif normalize == "mean":
        scale = magnitude.mean()
    else:  # "rms"
        scale = eligibility.square().mean().sqrt()
    return eligibility / torch.where(scale > 0, scale, torch.ones_like(scale))


def check_supported_layer(module: nn.Module, name: str = "") -> None:
    """Raise ``TypeError`` unless ``module`` is an ``nn.Linear`` or an ungrouped 2-d ``nn.Conv2d``."""
    label = f"layer {name!r} ({type(module).__name__})" if name else type(module).__name__
    if isinstance(module, nn.Conv2d) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        if module.groups != 1:
            raise TypeError(f"unsupported {label}: groups={module.groups}; only groups=1 convolutions are plastic. "
                            "Exclude it from `layers=` (e.g. with a predicate).")
        if module.padding_mode != "zeros":
            raise TypeError(f"unsupported {label}: padding_mode={module.padding_mode!r}; only 'zeros' is supported")
        if isinstance(module.padding, str):
            raise TypeError(f"unsupported {label}: string padding {module.padding!r}; give explicit integers")
        return
    if isinstance(module, nn.Linear):
        return
    raise TypeError(f"unsupported {label}: plastic layers must be nn.Linear or nn.Conv2d (groups=1); "
                    "ConvTranspose, Conv1d/3d and other modules are not supported")


class EligibilityRule:
    """Base class of an eligibility term ``E(x, y, W)``.

    Subclasses implement :meth:`linear` and :meth:`conv2d`; both return the *batch-mean* eligibility in float32,
    shaped like the weight, before any normalisation.  ``y`` is the pre-activation **without bias**.
    """

    #: per-layer normalisation applied by the plug-in after (distributed) accumulation
    normalize: Normalization = "max"

    def linear(self, x: Tensor, y: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def conv2d(self, x: Tensor, y: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def __call__(self, module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Eligibility of ``module`` for input ``x`` and bias-free pre-activation ``y`` (float32, like weight)."""
        weight = module.weight.detach().float()
        x, y = x.detach().float(), y.detach().float()
        if isinstance(module, nn.Conv2d):
            return self.conv2d(x, y, weight, module.stride, module.padding, module.dilation)
        return self.linear(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), weight)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
