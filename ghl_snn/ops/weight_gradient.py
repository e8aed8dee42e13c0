"""The weight-gradient convolution, ``dL/dW`` of ``convNd(x, W)`` for an output signal ``g``: the Hebbian term of
every convolutional eligibility (GHL paper Eq. 4 with ``g = u``, the soft winner-take-all activity).

    H[k, c, *t] = sum_n sum_pos g[n, k, pos] * x[n, group(k) * C_g + c, pos * stride + t * dilation - padding]

computed by ``torch.ops.aten.convolution_backward`` (the same kernel autograd uses for ``dL/dW``; no unfold).

On CPU, torch has two implementations of that kernel, oneDNN (mkldnn) and its native im2col + GEMM path, and which
one is faster depends on the shape by an order of magnitude either way: oneDNN is ~9x slower for a 3 x 3 kernel on
a 1 x 1 map, the native path ~5x slower on large maps.  For a depthwise layer there is a third way, the same sum as
one forward convolution of each (channel, sample) input with its own output signal as the kernel, which is ~7x
faster than either for a 7 x 7 depthwise layer on a 56 x 56 map (ConvNeXt at 224 x 224).  On a small map the sum
is one matrix product over samples and positions, batched over groups, of the output signal and the gathered input
windows (no larger than the weight there): ~100x faster than both for a 1 x 1 depthwise layer on a 1 x 1 map, ~3x
for a 512-channel 1 x 1 kernel on a 2 x 2 map and for a 512-channel 3 x 3 kernel on a 2 x 2 map against the native
path (ResNet's last stage at a 64 x 64 input), where oneDNN's time varies fourfold from call to call with the memory
it is given.  So the first call for
each geometry times the candidates (cudnn-benchmark style: the best of three calls each, after a warm-up call) and
every later call with that geometry uses the fastest.  They compute the same sum; results agree to float rounding,
not bit for bit, so with ``torch.use_deterministic_algorithms(True)``, or with ``autotune(False)`` (or the
environment variable ``GHL_SNN_AUTOTUNE=0``), torch's default choice is always used.  The timing is redone in every
process and can choose differently on a busy machine: a run that must repeat to the last bit in another process
(``kill -9`` then ``--resume``) needs the timing off.  CUDA and other devices always use torch's own choice
(cuDNN has its own ``torch.backends.cudnn.benchmark``).

Kernel taps that read only zero padding at every output position (a 3 x 3 kernel on a 1 x 1 map, the last stage
of a ResNet at a small input) have an exactly zero weight gradient, and the convolution can run on the smaller
kernel of the other taps only.  Whether that pays depends on the shape as well (13x faster for ConvNeXt's 7 x 7
depthwise kernel on a 2 x 2 map, 7x for MobileNet-V3's 5 x 5 depthwise kernel on a 1 x 1 map, but slower for a
512-channel 3 x 3 kernel on a 1 x 1 map with two samples, where zero-filling the untouched entries costs more than
the smaller product saves), so on CPU it is one more timed choice per geometry; elsewhere, and when timing is off,
the touched taps are used for weights of at least 65536 entries (below that the extra small operations tend to
cost more than they save).

On CPU the input and output signal are also given row-major strides first: oneDNN's channels-last path is up to
~25x slower for depthwise kernels on small maps (ConvNeXt's 7 x 7 convolutions, whose inputs come out of a
permute), and a tensor with a 1 x 1 map can be contiguous and channels-last at once.
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["conv_weight_gradient", "layer_weight_gradient", "conv_input", "autotune"]

#: whether the CPU kernels are timed (``autotune``); ``GHL_SNN_AUTOTUNE=0`` starts with it off
_AUTOTUNE = [os.environ.get("GHL_SNN_AUTOTUNE", "1").strip().lower() not in ("0", "false", "off", "no")]
#: without timing, weights smaller than this (depthwise kernels) gain less from skipping padding-only taps than
#: the extra small operations cost
_SKIP_TAPS_FROM = 1 << 16
#: geometry -> the CPU kernel that won the timing (("taps", geometry): the full kernel or the touched taps)
_CHOICE: dict[tuple[object, ...], Callable[..., Tensor]] = {}
_MKLDNN_AVAILABLE = torch.backends.mkldnn.is_available()
_FORWARD = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


def autotune(enabled: bool | None = None) -> bool:
    """Turn the CPU backend timing on or off (``None``: leave it); returns whether it is on.  Turning it off also
    forgets the choices made so far."""
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise TypeError(f"autotune(enabled) takes True, False or None, got {enabled!r}")
        _AUTOTUNE[0] = enabled
        if not enabled:
            _CHOICE.clear()
    return _AUTOTUNE[0]


def _canonical(tensor: Tensor) -> Tensor:
    """``tensor`` with the row-major strides of its shape (a view when it is contiguous, else a copy)."""
    tensor = tensor.contiguous()
    shape = tensor.shape
    if 1 not in shape:  # only a size-1 dimension can carry a stride other than the row-major one
        return tensor
    expected = 1
    for size, stride in zip(reversed(shape), reversed(tensor.stride())):
        if stride != expected:
            return tensor.view(-1).view(shape) if tensor.numel() else tensor
        expected *= size
    return tensor


def _run(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
         dilation: tuple[int, ...], groups: int) -> Tensor:
    return torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False,
                                              [0] * len(stride), groups, (False, True, False))[1]


def _run_native(*args: object) -> Tensor:
    previous = torch.backends.mkldnn.set_flags(False, _fp32_precision=None)[0]
    try:
        return _run(*args)  # type: ignore[arg-type]
    finally:
        torch.backends.mkldnn.set_flags(previous, _fp32_precision=None)


def _timed(fn: object, *args: object, repeats: int = 3) -> tuple[float, Tensor]:
    """The best of ``repeats`` timed calls after a warm-up call (oneDNN builds its primitive on the first)."""
    result = fn(*args)  # type: ignore[operator]
    best = float("inf")
    for _ in range(repeats):
        del result  # one result alive at a time
        start = time.perf_counter()
        result = fn(*args)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best, result


def conv_weight_gradient(x: Tensor, weight: Tensor | Sequence[int], grad: Tensor, stride: Sequence[int],
                         padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Tensor:
    """``H`` shaped like ``weight``: the weight gradient of ``convNd(x, W, stride, padding, dilation, groups)`` for
    the output gradient ``grad`` (module docstring).  ``x``: (N, C, *S), ``grad``: (N, K, *S'); ``weight``: the
    layer's weight (its values are not read; passing the tensor spares torch's native kernel a weight-sized copy)
    or just its shape; integer padding (apply ``padding="same"`` or a non-zero padding mode to ``x`` first)."""
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    if not isinstance(weight, Tensor):
        weight = grad.new_empty(1).expand(tuple(weight))
    elif weight.dtype != grad.dtype or weight.device != grad.device:
        weight = weight.detach().to(grad)
    taps = _taps(tuple(x.shape[2:]), tuple(grad.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
    if taps is None:
        return _weight_gradient(x, weight, grad, stride, padding, dilation, groups)
    args = (x, weight, grad, stride, padding, dilation, groups)
    touched = functools.partial(_on_touched_taps, taps=taps)
    if not _tuning(x):
        return touched(*args) if weight.numel() >= _SKIP_TAPS_FROM else _weight_gradient(*args)
    # the full kernel against the touched taps (each tunes its own kernel on its warm-up call)
    return _fastest(("taps", *_geometry(*args)), lambda: (_weight_gradient, touched), *args)


def conv_input(module: nn.modules.conv._ConvNd, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The input and integer padding a weight-gradient convolution needs to reproduce ``module``'s forward.

    Zero padding given as integers is passed through; ``padding="same"`` / ``"valid"`` and the ``reflect`` /
    ``replicate`` / ``circular`` padding modes are applied to ``x`` explicitly (as the module's forward does), and
    the returned padding is then zero.
    """
    dims = x.dim() - 2
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return x, tuple(module.padding)
    if isinstance(module.padding, str):
        pads: list[int] = []
        for kernel, dilation in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = dilation * (kernel - 1) if module.padding == "same" else 0
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(module.padding) for _ in range(2)]
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    if any(pads):
        x = torch.nn.functional.pad(x, pads, mode=mode)
    return x, (0,) * dims


def layer_weight_gradient(module: nn.modules.conv._ConvNd, x: Tensor, grad: Tensor) -> Tensor:
    """``H`` shaped like ``module.weight``: the weight-gradient convolution of a Conv1d / Conv2d / Conv3d layer's
    own forward (its stride, dilation, groups, padding and padding mode) for the input batch ``x`` (N, C, *S) and
    the output signal ``grad`` (N, K, *S'): ``H[k, c, *t] = sum_n sum_pos grad[n, k, pos] x[n, c, pos + t]`` in the
    layer's geometry, which is ``dL/dW`` when ``grad = dL/dy``."""
    x, padding = conv_input(module, x)
    return conv_weight_gradient(x, module.weight, grad, module.stride, padding, module.dilation, module.groups)


@functools.lru_cache(maxsize=4096)
def _taps(sizes: tuple[int, ...], out_sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
          padding: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[tuple[int, int], ...] | None:
    """The touched taps along every spatial dim (``_touched_taps``), or ``None`` when every tap is touched;
    remembered per geometry."""
    taps = tuple(_touched_taps(*geometry) for geometry in zip(sizes, out_sizes, kernel, stride, padding, dilation))
    return None if all(window == (0, size - 1) for window, size in zip(taps, kernel)) else taps


def _touched_taps(size: int, out_size: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """First and last kernel tap (along one spatial dim) that reads an input position at some output position; the
    others read only zero padding.  ``(0, -1)`` when none does."""
    touched = []
    for tap in range(kernel):
        first = max(0, -(-(padding - tap * dilation) // stride))  # the first output whose input index is >= 0
        if first < out_size and first * stride + tap * dilation - padding < size:
            touched.append(tap)
    return (touched[0], touched[-1]) if touched else (0, -1)


def _on_touched_taps(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
                     dilation: tuple[int, ...], groups: int, *, taps: Sequence[tuple[int, int]]) -> Tensor:
    """The weight gradient when some kernel taps read only padding (a 3 x 3 kernel on a 1 x 1 map): those taps'
    entries are exactly 0, and the rest is the weight-gradient convolution of the smaller kernel of touched taps
    over the window of ``x`` (padded or cropped) that it reads, with no padding."""
    result = grad.new_zeros(weight.shape)
    if any(last < first for first, last in taps):
        return result
    pads: list[int] = []
    for (first, last), size, out_size, step, pad, spacing in zip(taps, x.shape[2:], grad.shape[2:], stride, padding,
                                                                 dilation):
        needed = (out_size - 1) * step + spacing * (last - first) + 1  # input length the smaller kernel reads
        left = pad - first * spacing  # negative: crop
        pads = [left, needed - size - left] + pads  # F.pad lists the last dimension first
    window = torch.nn.functional.pad(x, pads)
    region = (slice(None), slice(None)) + tuple(slice(first, last + 1) for first, last in taps)
    result[region] = _weight_gradient(window, weight[region], grad, stride, (0,) * len(stride), dilation, groups)
    return result


def _run_depthwise_correlation(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, ...],
                               padding: tuple[int, ...], dilation: tuple[int, ...], groups: int) -> Tensor:
    """A depthwise weight gradient as one forward convolution: every (channel, sample) pair correlates its padded
    input with its output signal, the layer's stride becoming the dilation and its dilation the stride; the sum
    over samples and the crop to the kernel follow."""
    samples, channels = x.shape[:2]
    pads = [p for p in reversed(padding) for _ in range(2)]
    padded = torch.nn.functional.pad(x, pads) if any(pads) else x
    signal = padded.transpose(0, 1).reshape(1, channels * samples, *padded.shape[2:])
    kernel = grad.transpose(0, 1).reshape(channels * samples, 1, *grad.shape[2:])
    out = _FORWARD[x.dim() - 2](signal, kernel, stride=dilation, dilation=stride, groups=channels * samples)
    out = out.view(channels, samples, *out.shape[2:]).sum(dim=1, keepdim=True)
    return out[(slice(None), slice(None)) + tuple(slice(0, size) for size in weight.shape[2:])].contiguous()


def _run_window_product(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
                        dilation: tuple[int, ...], groups: int) -> Tensor:
    """A weight gradient as one (group-batched) matrix product over the input windows that the kernel reads:
    ``H[k, c, t] = sum_{n, pos} g[n, k, pos] X[n, group(k) * C_g + c, pos, t]`` with ``X[n, c, pos, t] =
    x_padded[n, c, pos * stride + t * dilation]`` (a strided view of ``x``; the product gathers it once, which is
    why it is a candidate only where that gathered copy is no larger than the weight or ``x``: small maps)."""
    pads = [p for p in reversed(padding) for _ in range(2)]
    padded = torch.nn.functional.pad(x, pads) if any(pads) else x
    samples, channels = grad.shape[:2]
    out_sizes, kernel = tuple(grad.shape[2:]), tuple(weight.shape[2:])
    if groups == 1 and all(size == 1 for size in out_sizes + kernel):  # one product of two views (1 x 1 on 1 x 1)
        sampled = padded[(slice(None), slice(None)) + (slice(0, 1),) * len(kernel)]
        return torch.mm(grad.reshape(samples, channels).t(), sampled.reshape(samples, x.shape[1])).view(weight.shape)
    inner = padded.stride()[2:]
    windows = padded.as_strided(
        (samples, x.shape[1], *out_sizes, *kernel),
        (*padded.stride()[:2], *(step * s for step, s in zip(stride, inner)),
         *(spacing * s for spacing, s in zip(dilation, inner))),
        padded.storage_offset())
    product = torch.einsum("ngkp,ngcpt->gkct",
                           grad.reshape(samples, groups, channels // groups, -1),
                           windows.reshape(samples, groups, x.shape[1] // groups, grad[0, 0].numel(), -1))
    return product.reshape(weight.shape)


def _window_product_fits(x: Tensor, weight: Tensor, grad: Tensor) -> bool:
    """Whether [`_run_window_product`][]'s gathered windows (samples x channels x positions x taps) are no larger
    than the weight or the input."""
    windows = x.shape[0] * x.shape[1] * grad[0, 0].numel() * weight[0, 0].numel()
    return windows <= max(weight.numel(), x.numel())


def _tuning(x: Tensor) -> bool:
    """Whether kernels are timed for ``x``: on CPU with oneDNN available and on, ``autotune`` on, torch not in
    deterministic mode and not being traced by ``torch.compile`` (a timing inside a traced graph measures nothing,
    and Inductor lowers torch's own kernel, the one every candidate is checked against)."""
    return (x.device.type == "cpu" and _AUTOTUNE[0] and _MKLDNN_AVAILABLE and torch.backends.mkldnn.enabled
            and not torch.are_deterministic_algorithms_enabled() and not torch.compiler.is_compiling())


def _geometry(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
              dilation: tuple[int, ...], groups: int) -> tuple[object, ...]:
    """What a timed choice depends on."""
    return (x.shape, grad.shape, weight.shape, stride, padding, dilation, groups, x.dtype, torch.get_num_threads())


def _candidates(x: Tensor, weight: Tensor, grad: Tensor, groups: int) -> tuple[Callable[..., Tensor], ...]:
    """The CPU kernels timed for one geometry: oneDNN, torch's native path, for a depthwise layer (one input
    and one output channel per group) the forward correlation, and on small maps the window product."""
    candidates: tuple[Callable[..., Tensor], ...] = (_run, _run_native)
    if groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1:
        candidates += (_run_depthwise_correlation,)
    if _window_product_fits(x, weight, grad):
        candidates += (_run_window_product,)
    return candidates


def _weight_gradient(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
                     dilation: tuple[int, ...], groups: int) -> Tensor:
    """[`conv_weight_gradient`][] on torch's kernel, or on CPU the fastest candidate (module docstring)."""
    if x.device.type != "cpu":
        return _run(x, weight, grad, stride, padding, dilation, groups)
    x, grad, weight = _canonical(x), _canonical(grad), weight.detach().contiguous()
    args = (x, weight, grad, stride, padding, dilation, groups)
    if not _tuning(x):
        return _run(*args)
    return _fastest(_geometry(*args), lambda: _candidates(x, weight, grad, groups), *args)


def _fastest(key: tuple[object, ...], candidates: Callable[[], Sequence[Callable[..., Tensor]]],
             *args: object) -> Tensor:
    """The result of the candidate that won the timing for ``key``.  The first call times every candidate that
    ``candidates()`` lists (``_timed``), remembers the fastest in ``_CHOICE`` and returns its result (only the best
    result so far is kept alive, so the timing adds no memory of its own)."""
    chosen = _CHOICE.get(key)
    if chosen is not None:
        return chosen(*args)
    best_time, result = float("inf"), None
    for kernel in candidates():
        elapsed, candidate = _timed(kernel, *args)
        if elapsed < best_time:
            best_time, result, chosen = elapsed, candidate, kernel
        del candidate
    _CHOICE[key] = chosen  # type: ignore[assignment]
    return result  # type: ignore[return-value]
