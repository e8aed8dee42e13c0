"""Layer selection: which layers of a model a learner or monitor acts on.

``layers=`` of every learner and monitor accepts

* ``None``: every layer of the caller's default kinds (the GHL plug-in: every ``nn.Linear``, ``nn.Conv1d/2d/3d``
  and attention layer);
* a type or tuple of types (e.g. ``nn.Conv2d``);
* a ``(name, module) -> bool`` predicate;
* a qualified name (``"features.0"``), a module object (``model.conv1``) or an iterable mixing both.

Types, predicates and ``None`` are *filters*: a matching layer that cannot be plastic (a transposed convolution,
an LSTM, a frozen weight, ...) is skipped, and one [`PlasticityWarning`][] lists every skipped layer with the
reason.  Names and module objects are *explicit*: such a layer raises a ``TypeError`` that names it and says why.

Attention layers (``nn.MultiheadAttention``, torchvision's Swin window attention) call their projection weights
functionally, so the forward hooks of their ``out_proj`` / ``qkv`` / ``proj`` sub-modules never run.  Those
sub-modules are covered by selecting the attention layer itself (the plug-in makes all its projections plastic);
on their own they are skipped by filters and refused when named.
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable

from torch import nn


LayerSelector = (None | type | tuple[type, ...] | str | nn.Module | Iterable[str | nn.Module]
                 | Callable[[str, nn.Module], bool])
"""Which layers are plastic: ``None`` (every supported layer), a layer type or tuple of types, a qualified name, a
module, an iterable of names or modules, or a ``(name, module) -> bool`` predicate (see [`select_layers`][])."""
#: Why a module cannot be selected (``None``: it can).
Check = Callable[[nn.Module], "str | None"]

#: Kinds of synapse-like layers (they hold a weight matrix or kernel).  Those that are not plastic -- transposed
#: convolutions, recurrent layers, embeddings, bilinear layers -- are skipped with a warning by the default selection.
SYNAPSE_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.MultiheadAttention,
                                         nn.RNNBase, nn.RNNCellBase, nn.Embedding, nn.EmbeddingBag)


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` is an attention layer whose projections are plastic: ``nn.MultiheadAttention`` or the
    shifted-window attention of torchvision's Swin Transformers (both call their projection weights functionally)."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    swin = sys.modules.get("torchvision.models.swin_transformer")  # no instance can exist unless it is imported
    return swin is not None and isinstance(module, (swin.ShiftedWindowAttention, swin.ShiftedWindowAttentionV2))


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be a plastic layer, or ``None`` if it can.

    Plastic: ``nn.Linear``; ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` with any ``groups``, padding mode and
    (integer, ``"same"`` or ``"valid"``) padding; ``nn.MultiheadAttention`` and Swin's shifted-window attention
    (their input and output projections).
    """
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolutions are not plastic"
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            return "lazy layer not initialised yet: run one forward before selecting it"
        return None
    if is_attention(module):
        return None
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return "recurrent layers are not plastic (select the Linear layers around them)"
    return (f"{type(module).__name__} is not a plastic layer kind (Linear, Conv1d/2d/3d, MultiheadAttention, "
            "Swin window attention)")


#: Default kinds of the monitors and the spiking learner.
DEFAULT_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv2d)
#: Default kinds of the GHL plug-in: every synapse-like layer (unsupported ones are skipped with a warning).
PLASTIC_LAYER_TYPES: tuple[type, ...] = SYNAPSE_LAYER_TYPES


class PlasticityWarning(UserWarning):
    """A layer is skipped by the selection or recorded nothing before a learner's update."""


def plastic_weights(module: nn.Module) -> dict[str, tuple[nn.Parameter, int]]:
    """Plastic weights of one layer: ``{attribute path: (parameter, competition groups)}``.

    Linear: ``{"weight": (W, 1)}``; ConvNd: ``{"weight": (W, groups)}``; ``nn.MultiheadAttention``: the packed
    ``in_proj_weight`` (3 groups: query, key, value) or ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``,
    and ``out_proj.weight``; Swin window attention: ``qkv.weight`` (3 groups) and ``proj.weight``.  Competition
    (the SWTA softmax) runs over the output units of each group separately.
    """
    if isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            weights = {"in_proj_weight": (module.in_proj_weight, 3)}
        else:
            weights = {name: (getattr(module, name), 1) for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight")}
        weights["out_proj.weight"] = (module.out_proj.weight, 1)
        return weights
    if is_attention(module):
        return {"qkv.weight": (module.qkv.weight, 3), "proj.weight": (module.proj.weight, 1)}
    return {"weight": (module.weight, getattr(module, "groups", 1))}


def frozen_reason(module: nn.Module) -> str | None:
    """``"frozen weight ..."`` if a plastic weight of ``module`` has ``requires_grad=False``, else ``None``."""
    frozen = [path for path, (weight, _) in plastic_weights(module).items() if not weight.requires_grad]
    return f"frozen weight ({', '.join(frozen)} has requires_grad=False)" if frozen else None


def plastic_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be a plastic layer of the plug-in (unsupported kind or frozen weight), or ``None``."""
    return unsupported_reason(module) or frozen_reason(module)


def _functional_children(named: dict[str, nn.Module]) -> dict[str, str]:
    """Sub-module name -> name of the attention layer that calls its weight functionally."""
    children = {}
    for name, module in named.items():
        if is_attention(module):
            for path in plastic_weights(module):
                if "." in path:
                    child = path.rsplit(".", 1)[0]
                    children[f"{name}.{child}" if name else child] = name
    return children


def _label(name: str, module: nn.Module) -> str:
    return f"{name!r} ({type(module).__name__})"


def select_layers(model: nn.Module, layers: LayerSelector = None, *, types: tuple[type, ...] = DEFAULT_LAYER_TYPES,
                  check: Check = unsupported_reason) -> dict[str, nn.Module]:
    """Qualified name -> module for the layers chosen by ``layers`` (see the module docstring).

    Args:
        model: the model whose sub-modules are selected.
        layers: the selector; ``None`` selects every sub-module of ``types``.
        types: the kinds ``None`` selects.
        check: ``module -> reason or None``; filtered layers with a reason are skipped (one warning), named ones
            raise ``TypeError``.

    Raises ``KeyError`` for an unknown name or a module object that is not part of ``model``, ``TypeError`` for a
    named layer that cannot be selected or a selector of the wrong type, ``ValueError`` when nothing is selected.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    named = dict(model.named_modules())
    functional = _functional_children(named)
    explicit = _explicit_names(model, named, layers)
    if explicit is None:
        chosen: dict[str, nn.Module] = {}
        skipped: dict[str, list[str]] = {}
        for name, module in _filtered(named, types if layers is None else layers):
            parent = functional.get(name)
            if parent is not None:
                reason = (None if _matches(named, parent, types if layers is None else layers) else
                          "its weight is called functionally by its attention layer, so its forward hook never "
                          "runs; select the attention layer instead")
                if reason is None:
                    continue  # covered by its (selected) attention layer
            else:
                reason = check(module)
            if reason is None:
                chosen[name] = module
            else:
                skipped.setdefault(reason, []).append(_label(name, module))
        if skipped:
            count = sum(len(names) for names in skipped.values())
            warnings.warn(f"skipping {count} layer(s) of {type(model).__name__} that cannot be selected: "
                          + "; ".join(f"{', '.join(names)}: {reason}" for reason, names in skipped.items()),
                          PlasticityWarning, stacklevel=3)
    else:
        chosen = {}
        for name in explicit:
            module = named[name]
            parent = functional.get(name)
            reason = (f"its weight is called functionally by the attention layer {parent!r}, so its forward hook "
                      "never runs; select that layer instead") if parent is not None else check(module)
            if reason is not None:
                raise TypeError(f"unsupported layer {_label(name, module)}: {reason}")
            chosen[name] = module
    if not chosen:
        raise ValueError(f"layer selection {layers!r} matched no module of {type(model).__name__} that can be "
                         "selected")
    return chosen


def _is_types(layers: object) -> bool:
    return isinstance(layers, type) or (isinstance(layers, tuple) and bool(layers)
                                        and all(isinstance(t, type) for t in layers))


def _filtered(named: dict[str, nn.Module], layers: object) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in named.items() if _matches(named, name, layers)]


def _matches(named: dict[str, nn.Module], name: str, layers: object) -> bool:
    module = named[name]
    if _is_types(layers):
        kinds = layers if isinstance(layers, tuple) else (layers,)
        # nn.MultiheadAttention stands for every attention kind (it also selects Swin window attention)
        return isinstance(module, kinds) or (nn.MultiheadAttention in kinds and is_attention(module))
    return bool(name) and bool(layers(name, module))  # type: ignore[operator]


def _explicit_names(model: nn.Module, named: dict[str, nn.Module], layers: LayerSelector) -> list[str] | None:
    """The names an explicit selector (names / module objects) picks, or ``None`` for a filter."""
    if layers is None or _is_types(layers):
        return None
    if callable(layers) and not isinstance(layers, nn.Module):
        return None
    if isinstance(layers, (str, nn.Module)):
        items: list[object] = [layers]
    elif isinstance(layers, Iterable):
        items = list(layers)
    else:
        raise TypeError(f"layers must be None, a type or tuple of types, a (name, module) -> bool predicate, a "
                        f"name, a module or an iterable of names / modules; got {type(layers).__name__}")
    names_by_id = {}
    for name, module in named.items():
        names_by_id.setdefault(id(module), name)
    names, missing = [], []
    for item in items:
        if isinstance(item, nn.Module):
            if id(item) not in names_by_id:
                raise KeyError(f"layers= holds a module that is not part of {type(model).__name__}: {item!r}")
            names.append(names_by_id[id(item)])
        elif isinstance(item, str):
            (names if item in named else missing).append(item)
        else:
            raise TypeError(f"layers= items must be names (str) or modules, got {type(item).__name__}: {item!r}")
    if missing:
        raise KeyError(f"no module named {missing} in the model; available layers: "
                       f"{[n for n, m in named.items() if isinstance(m, PLASTIC_LAYER_TYPES)]}")
    return list(dict.fromkeys(names))
