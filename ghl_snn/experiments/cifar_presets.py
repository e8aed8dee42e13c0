"""The rows of the GHL paper's CIFAR tables run by [`ghl_snn.experiments.cifar`][]: network, data set, methods and
schedule of every row ([`Preset`][ghl_snn.experiments.cifar_presets.Preset]), each method's SGD settings (the paper's
code for GHL, a standard recipe for back-propagation) and the method's plasticity rule on the hidden convolutions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..models import MODELS
from ..plasticity import GHL
from ..comparison import methods as registry

#: this experiment's rows without a plastic rule; every method of the registry
#: ([`ghl_snn.comparison.methods`][]) that learns from the loss runs too
ROWS = ("bp", "bp-same", "softhebb")
METHODS = tuple(registry.method_names(("ghl", "sign", "hebb", *ROWS), reward=False))


def methods() -> list[str]:
    """Every method this experiment runs, as registered now (a modulator exported later is included)."""
    return registry.method_names(METHODS, reward=False)


@dataclass(frozen=True)
class OptimiserSettings:
    """SGD settings of the two parameter groups: plastic convolutions and everything else."""

    conv_lr: float
    conv_weight_decay: float
    rest_lr: float
    rest_weight_decay: float = 0.0
    momentum: float = 0.0


# the GHL reference hyper-parameters (the paper's code): SGD without momentum, two parameter groups
GHL_SETTINGS = {
    "deephebb": OptimiserSettings(conv_lr=1e-2, conv_weight_decay=5e-2, rest_lr=5e-3),
    "fasthebb": OptimiserSettings(conv_lr=5e-2, conv_weight_decay=1e-2, rest_lr=1e-4),
}
# the standard backprop recipe ("bp"): one learning rate for everything, momentum 0.9, weight decay 5e-4
BP_SETTINGS = OptimiserSettings(conv_lr=0.02, conv_weight_decay=5e-4, rest_lr=0.02, rest_weight_decay=5e-4,
                                momentum=0.9)
# Tables 2/4 (VGG, ResNet): the paper gives no GHL hyper-parameters for them; this package's choice
DEEP_GHL_SETTINGS = OptimiserSettings(conv_lr=1e-2, conv_weight_decay=5e-4, rest_lr=1e-2, rest_weight_decay=5e-4,
                                      momentum=0.9)
TABLE4_MODELS = ("vgg14", "vgg16", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")
#: paper accuracy (%) of the GHL rows of Tables 2 and 4 (CIFAR-10)
TABLE4_GHL_ACC = {"vgg14": 89.29, "vgg16": 89.48, "resnet20": 86.72, "resnet32": 86.86, "resnet44": 87.09,
                  "resnet56": 87.17, "resnet110": 87.21, "resnet1202": 86.97}
GHL_SETTINGS.update({model: DEEP_GHL_SETTINGS for model in TABLE4_MODELS})
GHL_SETTINGS.update({model: GHL_SETTINGS["deephebb"] for model in MODELS if model.startswith("plain-")})


@dataclass(frozen=True)
class Preset:
    """One row of a paper table (or the quick start): network, data, methods and schedule."""

    model: str
    dataset: str
    methods: tuple[str, ...]
    epochs: int = 100
    batch_size: int = 64
    width: float = 1.0
    description: str = ""
    bp_lr: float = BP_SETTINGS.conv_lr
    augment: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    #: per-group learning rates overriding the method's defaults (plastic convolutions / everything else)
    conv_lr: float | None = None
    head_lr: float | None = None
    #: eligibility normalisation of the plastic rules (``ghl_snn.rules.base.normalize_eligibility``)
    normalize: str | None = "max"
    #: one learning rate / weight decay for every parameter group, any method (before conv_lr / head_lr)
    lr: float | None = None
    weight_decay: float | None = None
    #: SWTA softmax temperature: one value for every plastic layer, one per plastic layer in order, or
    #: ((layer name, value), ...); None = the model's own ``plastic_taus``
    tau: float | tuple[float, ...] | tuple[tuple[str, float], ...] | None = None
    #: GHL methods: estimate E from this random fraction of each batch (1 = exact)
    eligibility_fraction: float = 1.0
    #: CPU threads for torch (None: torch's default); small networks run fastest on one
    threads: int | None = None


def _paper_presets() -> dict[str, Preset]:
    presets = {}
    tables = {"ghl": "Table 1 GHL", "bp": "Table 1 E2E BP (standard recipe)", "bp-same": "E2E BP with GHL's "
              "optimiser settings", "sign": "Table 5 sign-only ablation", "hebb": "local SWTA-Oja only",
              "softhebb": "Table 1 SoftHebb (layer-wise unsupervised, then classifier)"}
    for model in ("deephebb", "fasthebb"):
        for dataset in ("cifar10", "cifar100"):
            for method in tables:
                if method == "softhebb" and model != "deephebb":  # Table 1 has SoftHebb on DeepHebb only
                    continue
                presets[f"{model}-{dataset}-{method}"] = Preset(model, dataset, (method,),
                                                                 description=f"{tables[method]}, {model}, {dataset}")
    for model in TABLE4_MODELS:  # Tables 2 and 4 (He et al. recipe: crop + flip augmentation, batch 128)
        for method in ("ghl", "bp"):
            presets[f"{model}-cifar10-{method}"] = Preset(
                model, "cifar10", (method,), batch_size=128, augment=True,
                description=f"Table 2/4 {'GHL' if method == 'ghl' else 'E2E BP'}, {model}, cifar10"
                            + (f" (paper {TABLE4_GHL_ACC[model]}%)" if method == "ghl" else ""))
    for model in MODELS:  # Fig. 2: depth x width growth x activation, SoftHebb vs GHL
        if model.startswith("plain-"):
            for method in ("ghl", "softhebb"):
                presets[f"fig2-{model[len('plain-'):]}-{method}"] = Preset(
                    model, "cifar10", (method,), description=f"Fig. 2 {method}, {model}, cifar10")
    presets["quickstart"] = Preset("deephebb", "digits", ("ghl", "bp"), epochs=2, batch_size=32, width=0.125,
                                   threads=1, description="embedded scikit-learn digits upsampled to 32x32, no "
                                   "download; one CPU thread (the fastest for this small network)")
    return presets


PRESETS = _paper_presets()


def optimiser_for(method: str, preset: Preset, model: nn.Module, plastic: set[str]) -> torch.optim.SGD:
    """SGD with the method's parameter groups: ``bp`` uses the standard recipe, all others GHL's settings.

    ``preset.lr`` / ``preset.weight_decay`` (when set) replace the learning rate / weight decay of both groups,
    ``preset.conv_lr`` / ``preset.head_lr`` (when set) then override the learning rate of the plastic-convolution
    group and of the rest (the classifier head), for any method; ``conv_lr=0`` freezes the convolutions at their
    initialisation (the read-out-only control).
    """
    settings = replace(BP_SETTINGS, conv_lr=preset.bp_lr, rest_lr=preset.bp_lr) if method == "bp" \
        else GHL_SETTINGS[preset.model]
    if preset.lr is not None:
        settings = replace(settings, conv_lr=preset.lr, rest_lr=preset.lr)
    if preset.weight_decay is not None:
        settings = replace(settings, conv_weight_decay=preset.weight_decay, rest_weight_decay=preset.weight_decay)
    if preset.conv_lr is not None:
        settings = replace(settings, conv_lr=preset.conv_lr)
    if preset.head_lr is not None:
        settings = replace(settings, rest_lr=preset.head_lr)
    conv_params = [p for name, m in model.named_modules() if name in plastic for p in m.parameters()]
    conv_ids = {id(p) for p in conv_params}
    rest_params = [p for p in model.parameters() if id(p) not in conv_ids]
    return torch.optim.SGD([
        {"params": conv_params, "lr": settings.conv_lr, "weight_decay": settings.conv_weight_decay},
        {"params": rest_params, "lr": settings.rest_lr, "weight_decay": settings.rest_weight_decay},
    ], momentum=settings.momentum)


def plastic_taus(model: nn.Module, tau: float | tuple | None = None) -> dict[str, float]:
    """The model's plastic layers with their SWTA temperatures, ``tau`` overriding (see ``Preset``).

    Raises ``ValueError`` naming the layers when ``tau`` names an unknown layer or gives the wrong count."""
    taus = dict(model.plastic_taus)
    if tau is None:
        return taus
    if isinstance(tau, (int, float)):
        return {name: float(tau) for name in taus}
    if all(isinstance(item, (tuple, list)) for item in tau):
        unknown = [name for name, _ in tau if name not in taus]
        if unknown:
            raise ValueError(f"--tau names unknown layer(s) {unknown}; the plastic layers are {list(taus)}")
        return {**taus, **{name: float(value) for name, value in tau}}
    if len(tau) != len(taus):
        raise ValueError(f"--tau gives {len(tau)} values but the model has {len(taus)} plastic layers {list(taus)}")
    return dict(zip(taus, map(float, tau)))


def build_rule(method: str, model: nn.Module, eligibility_fraction: float = 1.0, *, normalize: str | None = "max",
               tau: float | tuple | None = None) -> GHL | None:
    """The plasticity rule of ``method`` on the model's hidden convolutions (``None`` for the rows without one:
    ``bp``, ``bp-same``, ``softhebb``), built by the method registry ([`ghl_snn.comparison.methods`][]).

    ``normalize`` is the eligibility normalisation (``"max"``: the GHL paper's; see
    [`ghl_snn.rules.base.normalize_eligibility`][]); it does not change ``sign`` (``|E| := 1``).  ``tau``: see
    ``plastic_taus``; ``eligibility_fraction``: estimate ``E`` from that random fraction of each batch.
    """
    if method in ROWS:
        return None
    taus = plastic_taus(model, tau)
    return registry.build_learner(method, model, tau=taus, layers=list(taus), normalize=normalize,
                                  eligibility_fraction=eligibility_fraction)
