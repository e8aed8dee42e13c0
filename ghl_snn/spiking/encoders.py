"""Input encoders: Bernoulli rate coding, constant current and recorded frames, generated one time step at a time.

An encoder is called once per step with the (static) input ``x`` and returns the network input for that step, so
nothing of size ``T`` is ever stored:

* [`BernoulliEncoder`][]: ``s_t ~ Bernoulli(clamp(gain * x, 0, 1))`` independently per step and element, hence
  ``E[s_t] = gain * x`` (requires ``x`` in ``[0, 1]``), like ``snntorch.spikegen.rate``;
* [`ConstantCurrent`][]: ``I_t = gain * x`` at every step (deterministic);
* [`FrameSequence`][]: the ``t``-th recorded frame at step ``t`` (event data binned into frames), whatever
  ``x`` is; [`present`][] replays a batch of recordings through a network or learner.

[`RateCoded`][] wraps a network and an encoder into an ordinary classifier (``forward(x)`` = the read-out averaged
over ``T`` encoded steps), so that any image training loop can drive a spiking network.

[`rate_encode`][] materialises the whole ``(T, *x.shape)`` spike train when it is really needed.

Input checks that need a value back on the host (``gain * x`` in ``[0, 1]``) run once per window:
[`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run] calls ``encoder.check(x)`` before the first step,
and the steps of that window then read nothing back (on a GPU a read-back is a device synchronisation, which
stalls the queue of kernels).  ``encoder.defer_check(x)`` is the same check without the read: it returns a flag
computed on the device and the function that raises ``check``'s error, for a caller that reads all its checks in
one transfer ([`ThreeFactor`][ghl_snn.spiking.learner.ThreeFactor] reads them with its update, once per window).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn


def _check_gain(gain: float) -> float:
    gain = float(gain)
    if not gain > 0 or gain == float("inf"):
        raise ValueError(f"encoder gain must be a finite number > 0, got {gain!r}")
    return gain


def check_num_steps(num_steps: int) -> int:
    """Return ``num_steps`` as an int, raising ``ValueError`` unless it is an integer >= 1."""
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"number of time steps T must be an integer >= 1, got {num_steps!r}")
    return int(num_steps)


class Encoder:
    """Base class: ``encoder(x) -> input of one time step``; ``check(x)`` validates ``x`` once per window."""

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` cannot be encoded (default: every input can)."""

    def defer_check(self, x: Tensor) -> tuple[Tensor, Callable[[], None]] | None:
        """[`check`][ghl_snn.spiking.encoders.Encoder.check] without reading anything back: ``(bad, report)``, where
        ``bad`` is a 0-dim tensor on ``x``'s device, nonzero when ``x`` cannot be encoded, and ``report()`` raises
        ``check``'s error; ``None`` when every input can be encoded (the default).  The steps that follow on ``x``
        run whatever its values (an encoder with a range encodes ``x`` clipped to it), so the caller must read
        ``bad`` before trusting the window."""
        return None

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class BernoulliEncoder(Encoder):
    """Bernoulli rate coding; ``generator`` makes the spike trains reproducible."""

    #: its output is binary spikes (lets the network gather synaptic input from the active inputs only)
    binary = True

    def __init__(self, gain: float = 1.0, generator: torch.Generator | None = None) -> None:
        self.gain = _check_gain(gain)
        self.generator = generator
        # the input checked last (a weak reference and its version) and the spike probability of its window
        self._checked: tuple[weakref.ref[Tensor], int] | None = None
        self._probability: Tensor | None = None

    def _scaled(self, x: Tensor) -> Tensor:
        return x * self.gain if self.gain != 1.0 else x

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``gain * x`` lies in ``[0, 1]`` (one read-back of ``(min, max)``); the steps
        that follow on the same, unmodified ``x`` do not check again, and neither does ``check(x)``."""
        if self._is_checked(x):
            return
        probability = self._scaled(x)
        if probability.numel():
            low, high = torch.stack(torch.aminmax(probability.detach())).tolist()
            if not (low >= 0 and high <= 1):  # also catches NaN
                raise ValueError(f"Bernoulli rate coding needs gain * x in [0, 1], got values in [{low:.3g}, "
                                 f"{high:.3g}]")
        self._accept(x, probability)

    def defer_check(self, x: Tensor) -> tuple[Tensor, Callable[[], None]] | None:
        """``bad = not (0 <= gain * x <= 1 everywhere)`` on the device (NaN counts as outside), and ``report``
        raising the error of [`check`][ghl_snn.spiking.encoders.BernoulliEncoder.check]; the window samples from
        ``clamp(gain * x, 0, 1)`` (NaN as 0), which is ``gain * x`` itself whenever ``bad`` is not set."""
        probability = self._scaled(x).detach()
        if not probability.numel():
            return None
        low, high = torch.aminmax(probability)
        bad = torch.logical_and(low >= 0, high <= 1).logical_not_()
        self._accept(x, torch.nan_to_num(probability, nan=0.0).clamp_(0.0, 1.0))

        def report() -> None:
            self._checked = None
            self.check(x)
        return bad, report

    def _accept(self, x: Tensor, probability: Tensor) -> None:
        self._checked = (weakref.ref(x), x._version)
        self._probability = None if probability is x else probability  # x itself is not kept alive

    def _is_checked(self, x: Tensor) -> bool:
        return self._checked is not None and self._checked[0]() is x and self._checked[1] == x._version

    def __call__(self, x: Tensor) -> Tensor:
        if not self._is_checked(x):
            self.check(x)
        probability = x if self._probability is None else self._probability
        return torch.bernoulli(probability, generator=self.generator)

    def __repr__(self) -> str:
        return f"BernoulliEncoder(gain={self.gain:g})"


class ConstantCurrent(Encoder):
    """Constant-current input ``I_t = gain * x``."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _check_gain(gain)

    def __call__(self, x: Tensor) -> Tensor:
        return x * self.gain if self.gain != 1.0 else x

    def __repr__(self) -> str:
        return f"ConstantCurrent(gain={self.gain:g})"


def rate_encode(x: Tensor, num_steps: int, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli spike train of shape ``(T, *x.shape)`` with ``P(spike) = gain * x`` (memory grows with ``T``)."""
    num_steps = check_num_steps(num_steps)
    encoder = BernoulliEncoder(gain, generator)
    encoder.check(x)
    return torch.stack([encoder(x) for _ in range(num_steps)])


class FrameSequence(Encoder):
    """Encoder that replays recorded frames: the ``k``-th call returns ``frames[:, k]`` (``frames`` is ``(N, T, ...)``),
    whatever static input the network's ``run`` passes; it plugs event data into
    [`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run] /
    [`ThreeFactor.run`][ghl_snn.spiking.learner.ThreeFactor.run] (use
    ``run(frames[:, 0], T, FrameSequence(frames))``)."""

    def __init__(self, frames: Tensor) -> None:
        if frames.dim() < 3:
            raise ValueError(f"frames must be (N, T, ...), got shape {tuple(frames.shape)}")
        self.frames = frames
        self.steps = frames.shape[1]
        self.index = 0

    def __call__(self, x: Tensor) -> Tensor:
        if self.index >= self.steps:
            raise IndexError(f"FrameSequence holds {self.steps} frames; the network asked for step {self.index + 1}")
        frame = self.frames[:, self.index]
        self.index += 1
        return frame


class Runs(Protocol):
    """Anything with ``run(x, num_steps, encoder)``: a [`SpikingNetwork`][ghl_snn.spiking.network.SpikingNetwork]
    or a [`ThreeFactor`][ghl_snn.spiking.learner.ThreeFactor] learner."""

    def run(self, x: Tensor, num_steps: int, encoder: Callable[[Tensor], Tensor]) -> Tensor: ...


def present(runner: Runs, frames: Tensor) -> Tensor:
    """Replay ``frames (N, T, ...)`` through ``runner`` for ``T`` steps; return the time-averaged read-out."""
    return runner.run(frames[:, 0], frames.shape[1], FrameSequence(frames))


class RateCoded(nn.Module):
    """A spiking network as an image classifier: ``forward(x)`` presents ``x`` for ``steps`` steps through
    ``encoder`` (default [`BernoulliEncoder`][], rate coding) and returns the time-averaged read-out
    ``z = (1/T) sum_t out_t`` (nothing recorded).  ``steps`` and ``encoder`` also drive a learner's window:
    ``learner.run(x, model.steps, model.encoder)``.  The default encoder draws from the global RNG, which the
    runner's checkpoints save and restore."""

    def __init__(self, net: nn.Module, steps: int, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.net = net
        self.steps = check_num_steps(steps)
        self.encoder = encoder if encoder is not None else BernoulliEncoder()

    def forward(self, x: Tensor) -> Tensor:
        return self.net.run(x, self.steps, self.encoder, record=False)
