"""The Forward-Forward baseline learner: each layer gets the gradient of its own softplus loss only."""
import copy

import pytest
import torch
import torch.nn.functional as F

from ghl_snn import ForwardForward, ForwardForwardMLP
from ghl_snn.rules.hebbff import random_wrong_labels


def _reference_loss(model, x, labels, negative, theta):
    """Float64 loop over samples' phases and layers: sum of every layer's own FF loss, each layer's input built from
    the previous layer's activity detached (so a weight's gradient comes from its own layer's loss only)."""
    total = 0.0
    for y, sign in ((labels, 1.0), (negative, -1.0)):
        h = x
        for layer in model.layers:
            inputs = torch.cat([h / (h.norm(dim=1, keepdim=True) + 1e-8),
                                model.label_scale * F.one_hot(y, model.num_classes).double()], dim=1)
            a = F.relu(inputs @ layer.weight.t() + layer.bias)
            total = total + F.softplus(sign * (theta - a.pow(2).mean(dim=1))).mean()
            h = a.detach()
    return total


def test_each_layer_gets_the_gradient_of_its_own_loss():
    torch.manual_seed(0)
    model = ForwardForwardMLP(10, (7, 5), num_classes=4).double()
    reference = copy.deepcopy(model)
    x, y = torch.rand(6, 10, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    y_neg = random_wrong_labels(y, 4, torch.Generator().manual_seed(1))
    learner = ForwardForward(model, theta=0.5, optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    learner.step(learner.loss(x, y, y_neg))
    _reference_loss(reference, x, y, y_neg, 0.5).backward()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad)


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="ForwardForwardMLP"):
        ForwardForward(torch.nn.Linear(3, 2), theta=0.5, optimizer=None)
    model = ForwardForwardMLP(4, (3,), num_classes=2)
    with pytest.raises(ValueError, match="theta"):
        ForwardForward(model, theta=float("nan"), optimizer=None)
