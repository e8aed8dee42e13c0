"""Forward-Forward (Hinton, 2022), the baseline [`HebbFF`][ghl_snn.HebbFF] is measured against: every layer of a
[`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP] trained by its own softplus loss on positive (true label) and
negative (wrong label) samples of the same images,

    L = Σ_l [mean_pos softplus(θ − g_l) + mean_neg softplus(g_l − θ)],  g_l = mean_k a_{l,k}²  (HebbFF Eq. 1),

with each layer's input detached ([`ForwardForwardMLP.trace`][ghl_snn.models.mlp.ForwardForwardMLP.trace]), so that
one backward pass of ``L`` gives every layer the gradient of its own loss only.  A torch optimiser applies it: Adam
(Hinton's choice) or plain SGD -- the latter is exactly HebbFF's update with a per-layer learning rate ``η n/2``
(see [`ghl_snn.rules.hebbff`][]).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..models.mlp import ForwardForwardMLP
from ..rules.hebbff import check_theta, ff_softplus_loss, gates_saturated, goodness, saturation_message


class ForwardForward:
    """The layer-local Forward-Forward loss of a [`ForwardForwardMLP`][ghl_snn.ForwardForwardMLP] (see the module
    docstring) with threshold ``theta``; the caller back-propagates it and steps ``optimizer``.

    The first [`loss`][ghl_snn.learners.forward_forward.ForwardForward.loss] warns when ``theta`` saturates every
    goodness gate of a layer (the softplus is then inert: ``theta`` is far from every goodness value).

    Examples:
        >>> import torch
        >>> from ghl_snn import ForwardForwardMLP
        >>> from ghl_snn.learners import ForwardForward
        >>> from ghl_snn.rules.hebbff import random_wrong_labels
        >>> model = ForwardForwardMLP(12, (8, 6), num_classes=3)
        >>> ff = ForwardForward(model, theta=0.5, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))
        >>> x, y = torch.rand(4, 12), torch.tensor([0, 1, 2, 0])
        >>> ff.step(ff.loss(x, y, random_wrong_labels(y, 3)))
    """

    def __init__(self, model: ForwardForwardMLP, theta: float, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(model, ForwardForwardMLP):
            raise TypeError(f"ForwardForward trains a ForwardForwardMLP, got {type(model).__name__}")
        self.model, self.theta, self.optimizer = model, check_theta(theta), optimizer
        self._checked = False

    def loss(self, x: Tensor, labels: Tensor, negative_labels: Tensor) -> Tensor:
        """``L`` of the module docstring for images ``x`` under their ``labels`` and ``negative_labels``."""
        positive, negative = self.model.trace(x, labels), self.model.trace(x, negative_labels)
        loss = sum(ff_softplus_loss(a_pos, a_neg, self.theta, reduction="mean")
                   for (_, a_pos), (_, a_neg) in zip(positive, negative))
        if not self._checked and torch.isfinite(loss):
            self._checked = True
            for index, ((_, a_pos), (_, a_neg)) in enumerate(zip(positive, negative)):
                g_pos, g_neg = goodness(a_pos.detach()), goodness(a_neg.detach())
                if gates_saturated(g_pos, g_neg, self.theta):
                    warnings.warn("FF: " + saturation_message(index, self.theta, float(g_pos.mean()),
                                                              float(g_neg.mean())), RuntimeWarning, stacklevel=2)
                    break
        return loss  # type: ignore[return-value]

    def step(self, loss: Tensor) -> None:
        """Back-propagate ``loss`` (each layer's own) and step the optimiser."""
        loss.backward()
        self.optimizer.step()
