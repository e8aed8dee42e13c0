"""The weight-gradient convolution (the Hebbian term of GHL Eq. 4 for ConvNd) against a float64 loop reference and
autograd, with either CPU backend and any input layout; and the reused eligibility buffers of the plug-in."""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL
from ghl_snn.ops import weight_gradient
from ghl_snn.ops.weight_gradient import autotune, conv_weight_gradient


def reference_conv2d_weight(x, grad, weight_shape, stride, padding, dilation, groups):
    """H[k, c, a, b] = sum_{n, i, j} g[n, k, i, j] * xpad[n, group(k) * C_g + c, i*s + a*d, j*s + b*d], by loops."""
    x, grad = x.double(), grad.double()
    padded = F.pad(x, (padding, padding, padding, padding))
    k_out, c_group, kh, kw = weight_shape
    per_group = k_out // groups
    out = torch.zeros(weight_shape, dtype=torch.float64)
    for n, k, i, j in itertools.product(range(x.shape[0]), range(k_out), range(grad.shape[2]), range(grad.shape[3])):
        first = (k // per_group) * c_group
        rows = [i * stride + a * dilation for a in range(kh)]
        cols = [j * stride + b * dilation for b in range(kw)]
        out[k] += grad[n, k, i, j] * padded[n, first:first + c_group][:, rows][:, :, cols]
    return out


@pytest.fixture(autouse=True)
def fresh_choices():
    autotune(True)  # also the state every other test runs in
    weight_gradient._CHOICE.clear()
    yield
    autotune(True)


@pytest.mark.parametrize("groups,stride,padding,dilation,side", [(1, 1, 1, 1, 5), (2, 2, 0, 1, 6), (4, 1, 2, 2, 5),
                                                                 (1, 1, 1, 1, 1)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "permuted"])
def test_conv2d_matches_loop_reference_in_every_layout(groups, stride, padding, dilation, side, layout):
    torch.manual_seed(0)
    x = torch.randn(2, 4, side, side)
    weight_shape = (8, 4 // groups, 3, 3)
    out_side = (side + 2 * padding - dilation * 2 - 1) // stride + 1
    grad = torch.randn(2, 8, out_side, out_side)
    expected = reference_conv2d_weight(x, grad, weight_shape, stride, padding, dilation, groups)
    if layout == "channels_last":
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":  # what a permute back from (N, H, W, C) leaves, as in ConvNeXt
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        grad = grad.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    choices = []
    for _ in range(2):  # the first call times both backends, the second uses the one it chose
        got = conv_weight_gradient(x, weight_shape, grad, (stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
        choices.append(dict(weight_gradient._CHOICE))
    # one geometry, timed once (on a 1 x 1 map also the touched-taps choice and its smaller kernel's geometry)
    assert len(choices[0]) == (1 if side > 1 else 3) and choices[1] == choices[0]


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("pass_tensor", [False, True], ids=["shape", "weight"])
def test_conv1d_conv3d_match_autograd(dims, groups, pass_tensor):
    torch.manual_seed(1)
    conv = {1: F.conv1d, 3: F.conv3d}[dims]
    x = torch.randn(2, 6, *(5,) * dims, dtype=torch.float64)
    weight = torch.randn(9, 6 // groups, *(3,) * dims, dtype=torch.float64, requires_grad=True)
    y = conv(x, weight, stride=2, padding=1, groups=groups)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad((y * grad).sum(), weight)
    got = conv_weight_gradient(x.float(), weight if pass_tensor else weight.shape, grad.float(), (2,) * dims,
                               (1,) * dims, (1,) * dims, groups)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side,kernel,stride,padding,dilation", [
    (1, 3, 1, 1, 1), (1, 7, 1, 3, 1), (2, 3, 2, 1, 1), (1, 3, 2, 1, 1), (2, 3, 1, 2, 2), (3, 5, 2, 4, 1),
    (2, 3, 1, 3, 1), (4, 3, 3, 2, 2)])
@pytest.mark.parametrize("groups", [1, 4])
def test_taps_reading_only_padding_match_autograd(side, kernel, stride, padding, dilation, groups, monkeypatch):
    """Small maps where some taps read only zero padding: the smaller convolution over the touched taps (forced
    here: untimed, with every weight size eligible)."""
    autotune(False)
    monkeypatch.setattr(weight_gradient, "_SKIP_TAPS_FROM", 0)  # these test weights are small
    calls = []
    skip = weight_gradient._on_touched_taps
    monkeypatch.setattr(weight_gradient, "_on_touched_taps", lambda *a, **k: calls.append(1) or skip(*a, **k))
    torch.manual_seed(4)
    x = torch.randn(2, 8, side, side + 1, dtype=torch.float64)
    weight = torch.randn(8, 8 // groups, kernel, kernel, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad((y * grad).sum(), weight)
    got = conv_weight_gradient(x.float(), weight, grad.float(), (stride,) * 2, (padding,) * 2, (dilation,) * 2,
                               groups)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    touched = [weight_gradient._touched_taps(*geometry) for geometry in zip(
        x.shape[2:], y.shape[2:], (kernel, kernel), (stride,) * 2, (padding,) * 2, (dilation,) * 2)]
    skipped = False
    for dim, (first, last) in enumerate(touched):  # the taps left out really receive nothing
        outside = [tap for tap in range(kernel) if not first <= tap <= last]
        if outside:
            skipped = True
            assert expected.index_select(dim + 2, torch.tensor(outside)).abs().max() == 0
    assert calls == ([1] if skipped else [])


@pytest.mark.parametrize("touched_wins", [True, False])
def test_touched_taps_are_a_timed_choice_on_cpu(touched_wins, monkeypatch):
    """With timing on, the full kernel and the touched taps are timed once per geometry (whatever the weight's
    size) and the faster is kept; both give autograd's weight gradient."""
    torch.manual_seed(5)
    x = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    weight = torch.randn(6, 1, 7, 7, dtype=torch.float64, requires_grad=True)  # depthwise 7 x 7 on a 2 x 2 map
    y = F.conv2d(x, weight, padding=3, groups=6)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad((y * grad).sum(), weight)
    timed = weight_gradient._timed

    def is_touched(fn):  # the touched-taps candidate: _on_touched_taps with this geometry's taps bound
        return getattr(fn, "func", None) is weight_gradient._on_touched_taps

    def rigged(fn, *a):  # the winner as the test wants it; every other timing (the inner kernels) as it is
        if is_touched(fn) or fn is weight_gradient._weight_gradient:
            return 0.0 if is_touched(fn) == touched_wins else 1.0, timed(fn, *a)[1]
        return timed(fn, *a)

    monkeypatch.setattr(weight_gradient, "_timed", rigged)
    calls = []
    skip = weight_gradient._on_touched_taps
    monkeypatch.setattr(weight_gradient, "_on_touched_taps", lambda *a, **k: calls.append(1) or skip(*a, **k))
    for _ in range(2):
        got = conv_weight_gradient(x.float(), weight, grad.float(), (1, 1), (3, 3), (1, 1), 6)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    key = ("taps", x.shape, grad.shape, weight.shape, (1, 1), (3, 3), (1, 1), 6, torch.float32,
           torch.get_num_threads())
    chosen = weight_gradient._CHOICE[key]
    assert is_touched(chosen) if touched_wins else chosen is weight_gradient._weight_gradient
    assert len(calls) == (5 if touched_wins else 4)  # timing: warm-up + 3, then one more call only if it won


def test_touched_taps_of_a_3x3_kernel_on_a_1x1_map_is_the_centre():
    assert weight_gradient._touched_taps(1, 1, 3, 1, 1, 1) == (1, 1)
    assert weight_gradient._touched_taps(2, 1, 3, 2, 1, 1) == (1, 2)  # stride 2: only output 0, taps 1 and 2
    assert weight_gradient._touched_taps(8, 8, 3, 1, 1, 1) == (0, 2)


def test_both_backends_agree_and_the_choice_is_remembered(monkeypatch):
    torch.manual_seed(2)
    x, grad = torch.randn(2, 16, 3, 3), torch.randn(2, 16, 3, 3)
    args = (x, torch.empty(16, 16, 3, 3), grad, (1, 1), (1, 1), (1, 1), 1)
    default = weight_gradient._run(*args)
    native = weight_gradient._run_native(*args)
    torch.testing.assert_close(native, default, rtol=1e-5, atol=1e-6)
    assert torch.backends.mkldnn.enabled  # the native run restored torch's flag
    calls = []
    monkeypatch.setattr(weight_gradient, "_run_native", lambda *a: calls.append("native") or native)
    monkeypatch.setattr(weight_gradient, "_run", lambda *a: calls.append("default") or default)
    monkeypatch.setattr(weight_gradient, "_timed", lambda fn, *a: (1.0 if fn is weight_gradient._run else 0.5, fn(*a)))
    conv_weight_gradient(*args)
    assert calls == ["default", "native"]  # timed once each
    calls.clear()
    conv_weight_gradient(*args)
    assert calls == ["native"]  # the faster one, without timing again


@pytest.mark.parametrize("dims,side,kernel,stride,padding,dilation", [
    (2, 2, 5, 1, 2, 1), (2, 9, 7, 1, 3, 1), (2, 8, 3, 2, 1, 1), (2, 7, 3, 1, 2, 2), (1, 11, 5, 2, 2, 1),
    (3, 5, 3, 1, 1, 1)])
def test_every_candidate_kernel_matches_autograd_on_depthwise_layers(dims, side, kernel, stride, padding, dilation):
    """oneDNN, the native path and the forward correlation all give the depthwise weight gradient."""
    torch.manual_seed(5)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    x = torch.randn(3, 6, *(side,) * dims, dtype=torch.float64)
    weight = torch.randn(6, 1, *(kernel,) * dims, dtype=torch.float64, requires_grad=True)
    y = conv(x, weight, stride=stride, padding=padding, dilation=dilation, groups=6)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad((y * grad).sum(), weight)
    args = (x.float(), weight.detach().float(), grad.float(), (stride,) * dims, (padding,) * dims,
            (dilation,) * dims, 6)
    candidates = weight_gradient._candidates(args[0], args[1], args[2], 6)
    assert weight_gradient._run_depthwise_correlation in candidates
    for kernel_fn in candidates:
        torch.testing.assert_close(kernel_fn(*args).double(), expected, rtol=1e-5, atol=1e-5)
    assert weight_gradient._run_depthwise_correlation not in weight_gradient._candidates(
        torch.empty(1, 6, 4, 4), torch.empty(12, 1, 3, 3), torch.empty(1, 12, 4, 4), 6)  # multiplier 2: not depthwise


@pytest.mark.parametrize("dims,side,channels,out_channels,kernel,groups,stride,padding,dilation", [
    (2, 1, 6, 4, 1, 1, 1, 0, 1), (2, 5, 6, 4, 1, 2, 2, 0, 1), (2, 4, 6, 6, 1, 6, 1, 1, 1), (1, 7, 4, 8, 1, 4, 3, 0, 1),
    (3, 3, 4, 2, 1, 1, 1, 0, 1), (2, 2, 8, 8, 3, 1, 1, 1, 1), (2, 5, 6, 4, 3, 2, 2, 1, 1), (2, 6, 4, 4, 3, 4, 1, 2, 2),
    (1, 9, 4, 6, 5, 2, 2, 2, 1), (3, 3, 2, 4, 3, 1, 1, 1, 1)])
def test_the_window_product_candidate_matches_autograd(dims, side, channels, out_channels, kernel, groups, stride,
                                                       padding, dilation):
    """The window-product candidate (one group-batched matrix product over the gathered input windows) gives the
    weight gradient for any kernel, stride, padding, dilation and groups."""
    torch.manual_seed(6)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    x = torch.randn(3, channels, *(side,) * dims, dtype=torch.float64)
    weight = torch.randn(out_channels, channels // groups, *(kernel,) * dims, dtype=torch.float64,
                         requires_grad=True)
    y = conv(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad((y * grad).sum(), weight)
    args = (x, weight.detach(), grad, (stride,) * dims, (padding,) * dims, (dilation,) * dims, groups)
    torch.testing.assert_close(weight_gradient._run_window_product(*args), expected, rtol=1e-10, atol=1e-10)


def test_the_window_product_is_offered_only_where_its_gathered_windows_are_small():
    """Offered when samples x channels x positions x taps is at most the weight's or the input's size: always for
    a 1 x 1 kernel, for a 3 x 3 kernel on a 2 x 2 map (ResNet's last stage at a 64 x 64 input), not on a large map."""
    def offered(x_shape, weight_shape, grad_shape):
        x, weight, grad = torch.empty(x_shape), torch.empty(weight_shape), torch.empty(grad_shape)
        return weight_gradient._run_window_product in weight_gradient._candidates(x, weight, grad, 1)
    assert offered((8, 64, 32, 32), (64, 64, 1, 1), (8, 64, 32, 32))
    assert offered((8, 512, 2, 2), (512, 512, 3, 3), (8, 512, 2, 2))
    assert not offered((8, 64, 32, 32), (64, 64, 3, 3), (8, 64, 32, 32))


def test_deterministic_mode_and_autotune_off_use_torchs_own_choice(monkeypatch):
    x, grad = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    args = (x, (4, 4, 3, 3), grad, (1, 1), (1, 1), (1, 1), 1)
    monkeypatch.setattr(weight_gradient, "_run_native", lambda *a: pytest.fail("native backend used"))
    autotune(False)
    conv_weight_gradient(*args)
    autotune(True)
    torch.use_deterministic_algorithms(True)
    try:
        conv_weight_gradient(*args)
    finally:
        torch.use_deterministic_algorithms(False)
    assert weight_gradient._CHOICE == {}
    with pytest.raises(TypeError, match="autotune"):
        autotune("yes")


def _model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.ReLU(),
                         nn.Linear(6, 3))


def _step(model, rule, seed, forwards=1):
    model.zero_grad(set_to_none=True)
    for part in range(forwards):
        torch.manual_seed(100 * seed + part)
        F.cross_entropy(model(torch.randn(5, 3, 6, 6)), torch.randint(0, 3, (5,))).backward()
    rule.step()
    return {name: model.get_submodule(name).weight.grad.clone() for name in ("0", "3", "5")}


@pytest.mark.parametrize("forwards", [1, 2])
def test_reused_buffers_give_the_same_updates_as_a_fresh_plug_in(forwards):
    """A Linear layer's E is written into one buffer for the plug-in's life; nothing of an earlier step leaks."""
    model = _model()
    rule = GHL(model, tau=0.5)
    _step(model, rule, seed=0, forwards=forwards)
    buffers = {name: buffer.data_ptr() for name, buffer in rule.fast.buffers.items()}
    assert set(buffers) == {"3", "5"}  # the Linear layers (a convolution's E comes from its own kernel)
    twin = copy.deepcopy(model)
    reused = _step(model, rule, seed=1, forwards=forwards)
    fresh = _step(twin, GHL(twin, tau=0.5), seed=1, forwards=forwards)
    assert {name: buffer.data_ptr() for name, buffer in rule.fast.buffers.items()} == buffers
    for name in reused:
        torch.testing.assert_close(reused[name], fresh[name], rtol=0, atol=0)
    rule.remove()
    assert rule.fast.buffers == {}


@pytest.mark.parametrize("columns,padded", [(256, True), (9216, True), (25088, False), (8320, False), (100, False)])
def test_which_linear_buffers_get_padded_rows(columns, padded):
    """Rows a multiple of 128 values are padded, long rows only when they are a multiple of 1024 values."""
    from ghl_snn.plasticity._fast_path import eligibility_buffer as _eligibility_buffer

    buffer = _eligibility_buffer((4, columns))
    assert buffer.shape == (4, columns)
    assert buffer.stride(0) == (columns + 16 if padded else columns)


def test_linear_buffer_rows_are_padded_and_e_matches_the_loop_reference():
    """A 256-input layer's E buffer has rows 16 values longer (power-of-two row strides slow BLAS down on CPU); E,
    read out contiguous, and the step's sign(dL/dW) |E| / max|E| still equal the float64 loop reference."""
    from test_swta_oja import reference_linear

    torch.manual_seed(0)
    layer = nn.Linear(256, 3, bias=False)
    rule = GHL(nn.Sequential(layer), tau=0.5)
    x = torch.randn(4, 256)
    layer(x).square().sum().backward()
    buffer = rule.fast.buffers["0"]
    assert buffer.shape == (3, 256) and buffer.stride() == (256 + 16, 1)
    raw = rule.eligibility("0")
    assert raw.is_contiguous()
    expected = reference_linear(x.double(), layer.weight.detach().double(), 0.5)
    torch.testing.assert_close(raw.double(), expected, rtol=1e-5, atol=1e-7)
    grad = layer.weight.grad.clone().double()
    rule.step()
    torch.testing.assert_close(layer.weight.grad.double(), grad.sign() * expected.abs() / expected.abs().max(),
                               rtol=1e-5, atol=1e-7)
