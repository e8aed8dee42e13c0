"""Adapters that put an unchanged neuron of an outside library behind the
[`SpikingNeuron`][ghl_snn.spiking.neurons.SpikingNeuron] interface: one class per library, found by the neuron's
type ([`as_neuron`][]).

* [`SnnTorchNeuron`][]: ``snntorch.Leaky``, ``RLeaky`` and ``Synaptic`` (they return ``(spk, mem)`` /
  ``(spk, syn, mem)`` and take the state tensors back as arguments);
* [`NorseNeuron`][]: ``norse.torch.LIFCell``, ``LIFBoxCell`` and ``LIFRecurrentCell`` (they return ``(z, state)``).

Each adapter holds the library's state between steps and gives the neuron's f-I curve (see
[`ghl_snn.spiking.neurons`][] for the closed forms), its step and its NIR node.  ``gain`` is the rate surrogate's
current scale: snntorch ``Leaky`` / ``RLeaky`` 1 (``mem = beta mem + I``), ``Synaptic`` ``1 / (1 - alpha)``;
norse ``LIFBoxCell`` ``dt tau_mem_inv``, ``LIFCell`` / ``LIFRecurrentCell`` ``tau_mem_inv / tau_syn_inv``.
``RLeaky``'s recurrent ``nn.Linear`` is a plastic synapse ``"<neuron>.module.recurrent"``; ``LIFRecurrentCell``'s
input and recurrent weights are called through two ``nn.Linear`` views sharing its parameters (``"<neuron>.input"``,
``"<neuron>.recurrent"``), and its input is the presynaptic spikes, not a current.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .neurons import IF, LIF, FICurve, SpikingNeuron, check_positive, nir_array, scalar


class NeuronAdapter(SpikingNeuron):
    """Base of the adapters.  ``NeuronAdapter(module)`` returns the adapter of the library ``module`` comes from
    (``TypeError`` when none wraps it); ``kind`` names the wrapped class (``"snntorch.Leaky"``, ...)."""

    library: ClassVar[str] = ""
    adapters: ClassVar[list[type[NeuronAdapter]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        NeuronAdapter.adapters.append(cls)

    def __new__(cls, module: nn.Module | None = None) -> NeuronAdapter:
        if cls is NeuronAdapter:
            cls = adapter_class(module)  # type: ignore[arg-type]
        return super().__new__(cls)

    @classmethod
    def wraps(cls) -> tuple[type, ...]:
        """The neuron classes of the library that this adapter wraps (empty when the library is not installed)."""
        return ()

    @classmethod
    def leaky(cls) -> NeuronAdapter:
        """The library's plain leaky integrate-and-fire neuron, wrapped (its entry in [`neuron_models`][])."""
        raise NotImplementedError

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.kind = f"{self.library}.{type(module).__name__}"
        self.state: Any = None
        self._fi = FICurve()

    @property
    def fi_curve(self) -> FICurve:
        return self._fi

    def reset(self) -> None:
        self.state = None

    def extra_repr(self) -> str:
        return f"kind={self.kind}, threshold={self.threshold:g}, gain={self.gain:g}"


class SnnTorchNeuron(NeuronAdapter):
    """An unchanged ``snntorch.Leaky``, ``RLeaky`` or ``Synaptic`` (constructed with ``init_hidden=False``)."""

    library = "snntorch"

    @classmethod
    def wraps(cls) -> tuple[type, ...]:
        try:
            import snntorch
        except ImportError:  # pragma: no cover - optional dependency
            return ()
        return (snntorch.Leaky, snntorch.RLeaky, snntorch.Synaptic)

    @classmethod
    def leaky(cls) -> SnnTorchNeuron:
        """``snntorch.Leaky(beta=0.95)``."""
        import snntorch

        return cls(snntorch.Leaky(beta=0.95))

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        import snntorch

        if getattr(module, "init_hidden", False):
            raise ValueError(f"{self.kind} with init_hidden=True keeps hidden state itself; construct it with "
                             "init_hidden=False (the default) to use it through NeuronAdapter")
        self.synaptic = isinstance(module, snntorch.Synaptic)
        self.recurrent = isinstance(module, snntorch.RLeaky)
        self.threshold = check_positive("threshold", scalar(module.threshold))
        self.gain = 1.0 / (1.0 - scalar(module.alpha)) if self.synaptic else 1.0
        beta = scalar(module.beta)
        # mem = beta mem + I - theta s_{t-1}: after a spike the membrane starts from -theta (1 - beta) / beta
        self._fi = FICurve(beta=beta, threshold=self.threshold, scale=self.gain,
                           reset_value=-self.threshold * (1.0 - beta) / beta if beta < 1 else 0.0)

    def forward(self, current: Tensor) -> Tensor:
        if self.synaptic:
            syn, mem = (torch.zeros_like(current),) * 2 if self.state is None else self.state
            spikes, syn, mem = self.module(current, syn, mem)
            self.state = (syn, mem)
        elif self.recurrent:  # its recurrent nn.Linear is called on the previous spikes
            spike, mem = (torch.zeros_like(current),) * 2 if self.state is None else self.state
            spikes, mem = self.module(current, spike, mem)
            self.state = (spikes, mem)
        else:
            spikes, self.state = self.module(current, torch.zeros_like(current) if self.state is None else self.state)
        return spikes

    def to_nir(self, shape: Sequence[int], dt: float) -> tuple[Any, bool]:
        """NIR ``LIF`` (``Leaky``) or ``CubaLIF`` (``Synaptic``); never exact: snntorch resets one step late
        (``mem_t = beta mem_{t-1} + I_t - theta s_{t-1}``), which NIR's reset to ``v_reset`` does not express."""
        if self.recurrent:
            raise NotImplementedError("snntorch.RLeaky has no NIR mapping here (its recurrent synapse)")
        import nir

        beta, theta = self.module.beta.detach(), self.module.threshold.detach()
        tau_mem = dt / (1.0 - beta)
        common = dict(r=nir_array(tau_mem / dt, shape), v_leak=nir_array(0.0, shape),
                      v_threshold=nir_array(theta, shape), v_reset=nir_array(0.0, shape))
        if not self.synaptic:
            return nir.LIF(tau=nir_array(tau_mem, shape), **common), False
        tau_syn = dt / (1.0 - self.module.alpha.detach())
        return nir.CubaLIF(tau_syn=nir_array(tau_syn, shape), tau_mem=nir_array(tau_mem, shape),
                           w_in=nir_array(tau_syn / dt, shape), **common), False


class NorseNeuron(NeuronAdapter):
    """An unchanged ``norse.torch.LIFCell``, ``LIFBoxCell`` or ``LIFRecurrentCell``."""

    library = "norse"

    @classmethod
    def wraps(cls) -> tuple[type, ...]:
        try:
            from norse.torch import LIFBoxCell, LIFCell, LIFRecurrentCell
        except ImportError:  # pragma: no cover - optional dependency
            return ()
        return (LIFCell, LIFBoxCell, LIFRecurrentCell)

    @classmethod
    def leaky(cls) -> NorseNeuron:
        """``norse.torch.LIFBoxCell()`` with norse's defaults (membrane decay ``1 - dt tau_mem_inv = 0.9``)."""
        from norse.torch import LIFBoxCell

        return cls(LIFBoxCell())

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        from norse.torch import LIFBoxCell, LIFRecurrentCell

        params = module.p
        self.box = isinstance(module, LIFBoxCell)
        self.threshold = check_positive("threshold", scalar(params.v_th))
        dt = float(getattr(module, "dt", 1e-3))
        if self.box:
            self.gain, scale = dt * scalar(params.tau_mem_inv), 1.0
        else:
            self.gain = scalar(params.tau_mem_inv) / scalar(params.tau_syn_inv)
            scale = 1.0 / (dt * scalar(params.tau_syn_inv))
        beta = 1.0 - dt * scalar(params.tau_mem_inv)
        if not 0 < beta <= 1:
            raise ValueError(f"{self.kind}: dt * tau_mem_inv = {1 - beta:g} must lie in [0, 1) for a stable membrane")
        # v <- beta v + (1 - beta)(v_leak + scale I): drive (1 - beta) scale I per unit current, reset to v_reset
        self._fi = FICurve(beta=beta, threshold=self.threshold, scale=(1.0 - beta) * scale,
                           rest=scalar(params.v_leak), reset_value=scalar(params.v_reset), integer_isi=True)
        self.input: nn.Linear | None = None
        self.recurrent: nn.Linear | None = None
        if isinstance(module, LIFRecurrentCell):  # its weights, called through nn.Linear views (hooks see them)
            hidden, inputs = module.input_weights.shape
            self.input, self.recurrent = nn.Linear(inputs, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
            self.input.weight, self.recurrent.weight = module.input_weights, module.recurrent_weights

    def forward(self, current: Tensor) -> Tensor:
        if self.recurrent is None:
            spikes, self.state = self.module(current, self.state)
            return spikes
        from norse.torch.functional.lif import LIFFeedForwardState, lif_feed_forward_step

        if self.state is None:  # norse's lif_step with the currents of the two views
            size = (*current.shape[:-1], self.recurrent.in_features)
            self.state = (current.new_zeros(size), LIFFeedForwardState(
                v=torch.full(size, scalar(self.module.p.v_leak), dtype=current.dtype, device=current.device),
                i=current.new_zeros(size)))
        previous, state = self.state
        drive = self.input(current) + self.recurrent(previous)  # type: ignore[misc]
        spikes, state = lif_feed_forward_step(drive, state, self.module.p, self.module.dt)
        self.state = (spikes, state)
        return spikes

    def to_nir(self, shape: Sequence[int], dt: float) -> tuple[Any, bool]:
        """NIR ``LIF`` (``LIFBoxCell``, exact with norse's reset to ``v_reset``) or ``CubaLIF`` (``LIFCell``)."""
        if self.recurrent is not None:
            raise NotImplementedError("norse.LIFRecurrentCell has no NIR mapping here (its recurrent synapse)")
        import nir

        p = self.module.p
        exact = getattr(p, "reset_method", None) is None or p.reset_method.__name__ == "reset_value"
        common = dict(r=nir_array(1.0, shape), v_leak=nir_array(p.v_leak, shape), v_threshold=nir_array(p.v_th, shape),
                      v_reset=nir_array(p.v_reset, shape))
        if self.box:
            return nir.LIF(tau=nir_array(1.0 / p.tau_mem_inv, shape), **common), exact
        return nir.CubaLIF(tau_syn=nir_array(1.0 / p.tau_syn_inv, shape), tau_mem=nir_array(1.0 / p.tau_mem_inv, shape),
                           w_in=nir_array(1.0, shape), **common), False


def adapter_class(module: nn.Module) -> type[NeuronAdapter]:
    """The adapter of ``module``'s library, by type; ``TypeError`` when no adapter wraps it."""
    for adapter in NeuronAdapter.adapters:
        if isinstance(module, adapter.wraps()):
            return adapter
    supported = ", ".join(f"{a.library}.{t.__name__}" for a in NeuronAdapter.adapters for t in a.wraps())
    raise TypeError(f"no neuron adapter for {type(module).__name__}: supported are {supported} and the built-in "
                    "ghl_snn IF/LIF")


def as_neuron(module: nn.Module) -> SpikingNeuron:
    """Return ``module`` if it is already a [`SpikingNeuron`][ghl_snn.spiking.neurons.SpikingNeuron], else its library's
    adapter."""
    if isinstance(module, SpikingNeuron):
        return module
    return adapter_class(module)(module)


def is_neuron_module(module: nn.Module) -> bool:
    """True for a [`SpikingNeuron`][ghl_snn.spiking.neurons.SpikingNeuron] or a module an adapter wraps."""
    return isinstance(module, SpikingNeuron) or any(isinstance(module, a.wraps()) for a in NeuronAdapter.adapters)


def neuron_models() -> dict[str, Callable[[], SpikingNeuron]]:
    """The neuron models by name, each a constructor of one layer: the built-in ``"if"`` ([`IF`][ghl_snn.IF]) and
    ``"lif"`` ([`LIF`][ghl_snn.LIF] with ``beta=0.95``), and each adapted library's leaky neuron under the library's
    name (``"snntorch"``, ``"norse"``: [`NeuronAdapter.leaky`][ghl_snn.spiking.adapters.NeuronAdapter.leaky])."""
    return {"if": IF, "lif": partial(LIF, beta=0.95), **{a.library: a.leaky for a in NeuronAdapter.adapters}}


def neuron_model(name: str) -> SpikingNeuron:
    """One layer of the neuron model ``name`` of [`neuron_models`][]; ``ValueError`` naming the choices."""
    models = neuron_models()
    if name not in models:
        raise ValueError(f"unknown neuron model {name!r}; choose from {', '.join(models)}")
    return models[name]()
