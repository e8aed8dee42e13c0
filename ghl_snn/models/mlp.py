"""MLPs of the HebbFF paper: the label-conditioned Forward-Forward MLP and the plain back-prop MLP.

Presets (HebbFF paper, Sec. 4): ``deep`` 784-2048-1024-512-256-10 and ``wide`` 784-2000-2000-10.  In
[`ForwardForwardMLP`][] (trained by FF or HebbFF) the trailing 10 is the set of candidate labels: every hidden
layer sees the label as a scaled one-hot vector appended to its input, and a sample is classified by the label
whose summed goodness over the layers is highest.  In [`backprop_mlp`][] it is a Linear soft-max classifier.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: hidden layer widths of the paper's two MLPs (Sec. 4)
MLP_PRESETS: dict[str, tuple[int, ...]] = {"deep": (2048, 1024, 512, 256), "wide": (2000, 2000)}


def l2_normalize(h: Tensor, eps: float = 1e-8) -> Tensor:
    """Rows scaled to unit L2 norm, ``h / (‖h‖ + eps)`` (an all-zero row stays zero)."""
    return h / (h.norm(dim=1, keepdim=True) + eps)


class ForwardForwardMLP(nn.Module):
    """Label-conditioned ReLU MLP for Forward-Forward / HebbFF (HebbFF paper, Sec. 3, departure 3).

    Layer ``l`` computes ``a_l = relu(W_l x̂_l + b_l)`` with ``x̂_l = [h_{l−1} / ‖h_{l−1}‖ ; s · onehot(y)]``:
    the L2-normalised activity of the previous layer (the flattened image for ``l = 1``) with the one-hot label
    scaled by ``s = label_scale`` appended.  The normalisation hides the previous layer's goodness, so each layer
    must find its own evidence.  Goodness ``g_l = mean_k a_{l,k}²`` (Eq. 1); prediction
    ``argmax_c Σ_l g_l(x, c)``.

    ``forward(x, labels)`` returns the per-layer goodness (B, L).  ``trace`` returns the ``(x̂_l, a_l)`` pairs
    that [`HebbFF`][ghl_snn.HebbFF] and the FF loss consume.

    ``init_gain``: weights drawn from ``N(0, init_gain² / (1 + s²))`` and zero biases, so that every layer's
    pre-activation starts as ``N(0, init_gain²)`` for any width (``‖x̂‖² = 1 + s²``) and its goodness near
    ``init_gain² / 2``: the goodness scale the threshold θ is chosen against.  ``None`` keeps PyTorch's default
    initialisation (pre-activations of order ``1/sqrt(3 n_in)``, goodness ~1e-3 at any θ-relevant scale).
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = MLP_PRESETS["deep"], num_classes: int = 10,
                 label_scale: float = 1.0, init_gain: float | None = 1.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not hidden:
            raise ValueError("ForwardForwardMLP needs at least one hidden layer")
        if init_gain is not None and not float(init_gain) > 0:
            raise ValueError(f"init_gain must be > 0 (or None for PyTorch's default), got {init_gain!r}")
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.label_scale = float(label_scale)
        self.init_gain = None if init_gain is None else float(init_gain)
        sizes = [self.in_features, *map(int, hidden)]
        self.layers = nn.ModuleList(nn.Linear(n_in + self.num_classes, n_out) for n_in, n_out in zip(sizes, sizes[1:]))
        if self.init_gain is not None:
            std = self.init_gain / (1.0 + self.label_scale ** 2) ** 0.5
            with torch.no_grad():
                for layer in self.layers:
                    layer.weight.normal_(0.0, std)
                    layer.bias.zero_()

    def extra_repr(self) -> str:
        gain = "default" if self.init_gain is None else f"{self.init_gain:g}"
        return f"num_classes={self.num_classes}, label_scale={self.label_scale:g}, init_gain={gain}"

    def normalize(self, h: Tensor) -> Tensor:
        """Input normalisation of every layer: rows scaled to unit L2 norm (see [`l2_normalize`][])."""
        return l2_normalize(h)

    def flatten_input(self, x: Tensor, labels: Tensor) -> Tensor:
        """``x`` as (B, in_features) after checking it and ``labels`` (B,) in ``[0, num_classes)``."""
        return self._check(x, labels)

    def _check(self, x: Tensor, labels: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            x = x.reshape(x.shape[0], -1) if x.dim() > 2 else x
            if x.dim() != 2 or x.shape[1] != self.in_features:
                raise ValueError(f"ForwardForwardMLP expects inputs (batch, {self.in_features}), got "
                                 f"{tuple(x.shape)}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must be shaped ({x.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        return x

    def layer_input(self, h: Tensor, labels: Tensor) -> Tensor:
        """``x̂ = [h / ‖h‖ ; s · onehot(labels)]`` (B, n + C)."""
        label_code = F.one_hot(labels, self.num_classes).to(h.dtype) * self.label_scale
        return torch.cat([self.normalize(h), label_code], dim=1)

    def trace(self, x: Tensor, labels: Tensor, detach: bool = True) -> list[tuple[Tensor, Tensor]]:
        """``[(x̂_l, a_l)]`` for every layer.  ``detach=True`` (FF, HebbFF) stops gradients between layers."""
        h = self._check(x, labels)
        pairs = []
        for layer in self.layers:
            inputs = self.layer_input(h, labels)
            activation = F.relu(layer(inputs))
            pairs.append((inputs, activation))
            h = activation.detach() if detach else activation
        return pairs

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Per-layer goodness ``g_l`` (Eq. 1), shaped (B, L)."""
        return torch.stack([a.pow(2).mean(dim=1) for _, a in self.trace(x, labels)], dim=1)

    @torch.no_grad()
    def label_goodness(self, x: Tensor, per_layer: bool = False) -> Tensor:
        """Goodness summed over layers for every candidate label, (B, C), in one vectorised pass
        (``per_layer=True``: not summed, (B, C, L)).

        The first layer's image part ``W_x x̂`` is shared by all labels; only the label column differs.
        """
        x = self._check(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        batch, classes = x.shape[0], self.num_classes
        first = self.layers[0]
        image_part = F.linear(self.normalize(x), first.weight[:, :self.in_features], first.bias)  # (B, n1)
        label_part = first.weight[:, self.in_features:].t() * self.label_scale                  # (C, n1)
        h = F.relu(image_part[:, None, :] + label_part[None]).reshape(batch * classes, -1)
        layers = [h.pow(2).mean(dim=1)]
        labels = torch.arange(classes, device=x.device).repeat(batch)
        for layer in self.layers[1:]:
            h = F.relu(layer(self.layer_input(h, labels)))
            layers.append(h.pow(2).mean(dim=1))
        if per_layer:
            return torch.stack(layers, dim=1).reshape(batch, classes, len(layers))
        return torch.stack(layers).sum(dim=0).reshape(batch, classes)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Label with the highest goodness summed over layers (B,)."""
        return self.label_goodness(x).argmax(dim=1)


class ForwardForwardReadout(nn.Module):
    """A [`ForwardForwardMLP`][] frozen as it is (e.g. at the initialisation FF and HebbFF start from) with a
    trained soft-max read-out on its hidden activity: what the network gives a linear classifier without learning.

    The label input is neutral (``label_scale / C`` for every class, as in Hinton's FF read-out) and the read-out
    sees every layer's activity, each L2-normalised, concatenated."""

    def __init__(self, network: ForwardForwardMLP) -> None:
        super().__init__()
        self.network = network.requires_grad_(False)
        width = sum(layer.out_features for layer in network.layers)
        self.readout = nn.Linear(width, network.num_classes)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """The frozen network's normalised activity of every layer under the neutral label, (B, Σ n_l)."""
        h = self.network.flatten_input(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        neutral = torch.full((h.shape[0], self.network.num_classes), self.network.label_scale /
                             self.network.num_classes, dtype=h.dtype, device=h.device)
        parts = []
        for layer in self.network.layers:
            h = F.relu(layer(torch.cat([self.network.normalize(h), neutral], dim=1)))
            parts.append(self.network.normalize(h))
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Read-out logits (B, C)."""
        return self.readout(self.features(x))


def backprop_mlp(in_features: int = 784, hidden: Sequence[int] = MLP_PRESETS["deep"], num_classes: int = 10
                 ) -> nn.Sequential:
    """Plain ReLU MLP ``in → hidden… → num_classes`` (logits) for end-to-end back-propagation."""
    sizes = [int(in_features), *map(int, hidden)]
    modules: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        modules += [nn.Linear(n_in, n_out), nn.ReLU()]
    modules.append(nn.Linear(sizes[-1], int(num_classes)))
    return nn.Sequential(*modules)
