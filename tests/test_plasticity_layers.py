"""Grouped / depthwise Conv1d-3d and attention projections in the GHL plug-in against float64 loop references of
GHL Eq. 4 (softmax over the output units of each group / projection), also under bf16 autocast."""
import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, Ones, swta_oja


def reference_conv(x, weight, tau, stride, padding, dilation, groups, padding_mode="zeros"):
    """Loop over samples, output positions and output channels: gather each input patch of the channel's group
    explicitly and apply E_ik += u_k (x_i - y_k w_ik), u = softmax over the output channels of the group."""
    dims = x.dim() - 2
    x, weight = x.double(), weight.double()
    if isinstance(padding, str):
        pads = []
        for k, d in zip(reversed(weight.shape[2:]), reversed(dilation)):
            total = d * (k - 1) if padding == "same" else 0
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(padding) for _ in range(2)]
    padded = F.pad(x, pads, mode="constant" if padding_mode == "zeros" else padding_mode)
    kernel = weight.shape[2:]
    out_size = [(padded.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(dims)]
    c_out, c_group = weight.shape[:2]
    per_group = c_out // groups
    eligibility = torch.zeros_like(weight)
    for n, position in itertools.product(range(x.shape[0]), itertools.product(*map(range, out_size))):
        index = [torch.tensor([position[d] * stride[d] + dilation[d] * a for a in range(kernel[d])])
                 for d in range(dims)]
        patch = padded[n]
        for d in range(dims):
            patch = patch.index_select(1 + d, index[d])
        for g in range(groups):
            channels = range(g * per_group, (g + 1) * per_group)
            group_patch = patch[g * c_group:(g + 1) * c_group]
            y = torch.stack([(weight[k] * group_patch).sum() for k in channels])
            u = torch.softmax(y / tau, dim=0)
            for j, k in enumerate(channels):
                eligibility[k] += u[j] * (group_patch - y[j] * weight[k])
    return eligibility / x.shape[0]


def reference_linear(x, weight, tau, groups=1):
    """Loop over rows, output units and inputs: E_ik = mean_n u_k (x_i - y_k w_ik), softmax within each group."""
    x, weight = x.double().reshape(-1, x.shape[-1]), weight.double()
    n_out, n_in = weight.shape
    per_group = n_out // groups
    eligibility = torch.zeros_like(weight)
    for row in x:
        y = [float(weight[k] @ row) for k in range(n_out)]
        for k in range(n_out):
            block = range(k // per_group * per_group, (k // per_group + 1) * per_group)
            u = math.exp(y[k] / tau) / sum(math.exp(y[j] / tau) for j in block)
            for i in range(n_in):
                eligibility[k, i] += u * (float(row[i]) - y[k] * float(weight[k, i]))
    return eligibility / x.shape[0]


CONVS = {
    "conv1d-grouped-strided": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 9)),
    "conv2d-depthwise": (lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3), (2, 3, 5, 5)),
    "conv2d-grouped-same-reflect": (lambda: nn.Conv2d(4, 4, (3, 2), dilation=(2, 1), groups=2, padding="same",
                                                      padding_mode="reflect"), (2, 4, 6, 5)),
    "conv3d-grouped": (lambda: nn.Conv3d(2, 4, 2, stride=(1, 2, 1), groups=2), (2, 2, 3, 4, 3)),
}


def conv_reference(conv, x, tau):
    return reference_conv(x, conv.weight.detach(), tau, conv.stride, conv.padding, conv.dilation, conv.groups,
                          conv.padding_mode)


@pytest.mark.parametrize("kind", CONVS)
def test_conv_kinds_match_loop_reference(kind):
    make, shape = CONVS[kind]
    torch.manual_seed(0)
    conv = make()
    x = torch.randn(shape)
    rule = GHL(nn.Sequential(conv), tau=0.8, normalize=None, modulator=Ones())  # .grad = -E exactly
    conv(x).sum().backward()
    rule.step()
    expected = conv_reference(conv, x, 0.8)
    torch.testing.assert_close(conv.weight.grad.double(), -expected, rtol=1e-4, atol=1e-5)
    assert conv.bias.grad is not None  # the bias keeps its back-propagated gradient


@pytest.mark.parametrize("kind", ["conv1d-grouped-strided", "conv3d-grouped"])
def test_swta_oja_function_conv_nd_float64(kind):
    make, shape = CONVS[kind]
    torch.manual_seed(1)
    conv = make().double()
    x = torch.randn(shape, dtype=torch.float64)
    y = conv._conv_forward(x, conv.weight, None)
    got = swta_oja(x, y.detach(), conv.weight, tau=1.3, stride=conv.stride, padding=conv.padding,
                   dilation=conv.dilation, groups=conv.groups)
    torch.testing.assert_close(got, conv_reference(conv, x, 1.3), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["conv2d-depthwise", "conv1d-grouped-strided", "conv3d-grouped"])
def test_conv_kinds_under_bf16_autocast(kind):
    make, shape = CONVS[kind]
    torch.manual_seed(2)
    conv = make()
    x = torch.randn(shape)
    rule = GHL(nn.Sequential(conv), normalize=None, modulator=Ones())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    rule.step()
    expected = -conv_reference(conv, x, 1.0)
    assert conv.weight.grad.dtype == torch.float32
    scale = expected.abs().max()
    torch.testing.assert_close(conv.weight.grad.double() / scale, expected / scale, rtol=0, atol=3e-2)


def mha_forward64(mha, query, key, value):
    """Float64 multi-head attention written out (no dropout) on batch-first inputs: the projection weights and
    the attention output that the output projection receives."""
    embed, heads = mha.embed_dim, mha.num_heads
    if mha.in_proj_weight is not None:
        w_q, w_k, w_v = mha.in_proj_weight.detach().double().chunk(3)
    else:
        w_q, w_k, w_v = (getattr(mha, f"{p}_proj_weight").detach().double() for p in "qkv")
    b_q, b_k, b_v = mha.in_proj_bias.detach().double().chunk(3)
    q, k, v = (t.double() @ w.t() + b for t, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
    split = lambda t: t.unflatten(-1, (heads, embed // heads)).transpose(1, 2)  # (N, heads, L, d)  # noqa: E731
    scores = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(embed // heads), dim=-1)
    attended = (scores @ split(v)).transpose(1, 2).flatten(2)
    return {"w_q": w_q, "w_k": w_k, "w_v": w_v, "attended": attended}


def mha_reference(mha, query, key, value, tau):
    """The loop reference of every projection of ``mha`` on batch-first inputs."""
    forward = mha_forward64(mha, query, key, value)
    w_q, w_k, w_v = forward["w_q"], forward["w_k"], forward["w_v"]
    refs = {"out_proj.weight": reference_linear(forward["attended"], mha.out_proj.weight.detach(), tau)}
    if mha.in_proj_weight is not None:
        refs["in_proj_weight"] = torch.cat([reference_linear(t, w, tau) for t, w in
                                            ((query, w_q), (key, w_k), (value, w_v))])
    else:
        refs.update({f"{p}_proj_weight": reference_linear(t, w, tau)
                     for p, t, w in (("q", query, w_q), ("k", key, w_k), ("v", value, w_v))})
    return refs


ATTENTION = {
    "self-packed": (dict(), "self"),
    "cross-packed": (dict(), "cross"),
    "cross-separate-kdim-vdim": (dict(kdim=5, vdim=3), "cross"),
}


def attention_inputs(mha, how):
    query = torch.randn(2, 3, mha.embed_dim)
    if how == "self":
        return query, query, query
    return query, torch.randn(2, 4, mha.kdim), torch.randn(2, 4, mha.vdim)


@pytest.mark.parametrize("kind", ATTENTION)
def test_multihead_attention_projections_match_loop_reference(kind):
    kwargs, how = ATTENTION[kind]
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(8, 2, batch_first=True, **kwargs)
    rule = GHL(mha, tau=0.9, normalize=None, modulator=Ones())
    query, key, value = attention_inputs(mha, how)
    mha(query, key, value)[0].sum().backward()
    rule.step()
    expected = mha_reference(mha, query, key, value, 0.9)
    assert set(rule.synapses) == set(expected)
    params = dict(mha.named_parameters())
    for name, reference in expected.items():
        torch.testing.assert_close(params[name].grad.double(), -reference, rtol=1e-4, atol=1e-5, msg=name)


def test_attention_eligibility_averages_over_accumulated_forwards():
    torch.manual_seed(8)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    rule = GHL(mha, normalize=None, modulator=Ones())
    batches = [attention_inputs(mha, "self") for _ in range(2)]
    for query, key, value in batches:  # gradient accumulation: two forwards, one step
        mha(query, key, value)[0].sum().backward()
    rule.step()
    references = [mha_reference(mha, *batch, 1.0) for batch in batches]
    for name, param in mha.named_parameters():
        if name in references[0]:
            expected = (references[0][name] + references[1][name]) / 2
            torch.testing.assert_close(param.grad.double(), -expected, rtol=1e-4, atol=1e-5, msg=name)


def test_multihead_attention_under_bf16_autocast():
    torch.manual_seed(4)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    rule = GHL(mha, normalize=None, modulator=Ones())
    query, key, value = attention_inputs(mha, "self")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mha(query, key, value)[0]
    out.float().sum().backward()
    rule.step()
    for name, reference in mha_reference(mha, query, key, value, 1.0).items():
        got = dict(mha.named_parameters())[name].grad.double()
        assert got.dtype == torch.float64 and torch.isfinite(got).all()
        cosine = F.cosine_similarity(got.flatten(), -reference.flatten(), dim=0)
        assert cosine > 0.995, (name, float(cosine))


def test_transformer_encoder_has_no_silent_layer(recwarn):
    torch.manual_seed(5)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Flatten(), nn.Linear(24, 3))
    rule = GHL(model)
    out_projs = [n for n, m in model.named_modules() if n.endswith("out_proj")]
    assert out_projs and not set(out_projs) & set(rule.layers)  # covered by their attention layers
    model(torch.randn(2, 3, 8)).sum().backward()
    rule.step()
    assert not [w for w in recwarn if "recorded no" in str(w.message)]
    for weight in rule.parameters():
        assert weight.grad is not None  # max-normalised |E| with a sign, to one rounding:
        assert weight.grad.abs().max() == pytest.approx(1.0, rel=1e-6)


def test_eligibility_takes_every_layer_name_on_a_transformer():
    """``rule.layers`` names modules, ``rule.synapses`` weights: ``eligibility`` takes both.  A Linear layer's name
    gives its E; an attention layer's name gives ``{weight name: E}`` of its projections, each the same tensor as
    asking for that weight, and equal to SWTA-Oja of the recorded projection inputs (checked on the output
    projection, whose input is the attention output)."""
    torch.manual_seed(6)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Flatten(), nn.Linear(24, 3))
    rule = GHL(model, normalize=None)
    attention = model[0].layers[0].self_attn
    seen = []
    hook = attention.register_forward_hook(lambda m, a, o: seen.append(o[0].detach()))
    model(torch.randn(2, 3, 8)).sum().backward()
    hook.remove()
    by_layer = [rule.eligibility(name) for name in rule.layers]
    weights = {key: s.weight for key, s in rule.synapses.items()}
    for name, eligibility in zip(rule.layers, by_layer):
        if isinstance(rule.layers[name], nn.MultiheadAttention):
            assert set(eligibility) == {f"{name}.in_proj_weight", f"{name}.out_proj.weight"}
            for key, value in eligibility.items():
                assert value.shape == weights[key].shape
                torch.testing.assert_close(value, rule.eligibility(key), rtol=0, atol=0)
            out_weight = attention.out_proj.weight.detach()
            # the output projection's input: the heads' concatenation, recovered from its output
            concat = torch.linalg.lstsq(out_weight, (seen[0] - attention.out_proj.bias.detach()).reshape(-1, 8).t()
                                        ).solution.t()
            expected = swta_oja(concat, concat @ out_weight.t(), out_weight, tau=1.0)
            torch.testing.assert_close(eligibility[f"{name}.out_proj.weight"], expected, rtol=1e-3, atol=1e-5)
        else:
            assert isinstance(eligibility, torch.Tensor) and eligibility.shape == weights[name].shape
    with pytest.raises(KeyError, match=r"weights: \[.*'0.layers.0.self_attn.in_proj_weight'"):
        rule.eligibility("0.layers.0.self_attn.out_proj")


def test_swin_window_attention_matches_loop_reference():
    swin = pytest.importorskip("torchvision.models.swin_transformer")
    torch.manual_seed(6)
    attention = swin.ShiftedWindowAttention(8, [2, 2], [1, 1], num_heads=2).double()
    rule = GHL(attention, tau=1.1, normalize=None, modulator=Ones())
    assert set(rule.synapses) == {"qkv.weight", "proj.weight"}
    x = torch.randn(2, 4, 4, 8, dtype=torch.float64)
    attention(x).sum().backward()
    rule.step()
    qkv = attention.qkv.weight.detach()
    # the projection's input: the same window attention with an identity output projection
    attended = swin.shifted_window_attention(
        x, qkv, torch.eye(8, dtype=torch.float64), attention.get_relative_position_bias(), [2, 2], 2,
        shift_size=[1, 1], qkv_bias=attention.qkv.bias.detach(), proj_bias=None, training=False).detach()
    # the plug-in accumulates E in float32
    torch.testing.assert_close(attention.qkv.weight.grad, -reference_linear(x, qkv, 1.1, groups=3),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(attention.proj.weight.grad,
                               -reference_linear(attended, attention.proj.weight.detach(), 1.1),
                               rtol=1e-4, atol=1e-6)


MHA_CALLS = {  # name: (module kwargs, inputs: "self" / "kv" (key is value) / "cross", batched)
    "self-packed": (dict(), "self", True),
    "kv-shared-packed": (dict(), "kv", True),
    "cross-packed": (dict(), "cross", True),
    "cross-separate-kdim": (dict(kdim=5, vdim=3), "cross", True),
    "self-unbatched": (dict(), "self", False),
}


def mha_calls_inputs(mha, how, batched):
    sizes = ((2,) if batched else ()), (3,), (4,)
    first = mha.batch_first and batched

    def sequence(length, features):
        shape = (*sizes[0], length) if first else (length, *sizes[0])
        return torch.randn(*shape, features)
    query = sequence(3, mha.embed_dim)
    if how == "self":
        return query, query, query
    key = sequence(4, mha.kdim)
    return query, key, key if how == "kv" else sequence(4, mha.vdim)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", MHA_CALLS)
def test_neuron_sign_on_attention_projections_equals_grad_sign(kind, batch_first):
    """NeuronSign's per-synapse credit sum_n dL/dy_n x_n^T of every projection call is that row block's dL/dW, so
    its update equals GradSign's (autograd's sign) on packed, shared-key/value, cross and separate projections."""
    from ghl_snn import GradSign, NeuronSign
    kwargs, how, batched = MHA_CALLS[kind]
    torch.manual_seed(11)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, **kwargs)
    inputs = mha_calls_inputs(mha, how, batched)
    weights = torch.randn_like(mha(*inputs)[0])
    grads = {}
    for modulator in (GradSign(), NeuronSign()):
        model = copy.deepcopy(mha)
        rule = GHL(model, modulator=modulator)
        (model(*inputs)[0] * weights).sum().backward()
        rule.step()
        grads[type(modulator).__name__] = {name: model.get_parameter(name).grad for name in rule.synapses}
    assert grads["NeuronSign"].keys() == grads["GradSign"].keys()
    for name, expected in grads["GradSign"].items():
        assert expected.abs().sum() > 0
        torch.testing.assert_close(grads["NeuronSign"][name], expected, msg=name)


def test_feedback_sign_on_attention_meets_each_samples_tokens_per_row_block():
    """FeedbackSign on cross-attention (sequence-first inputs): the query, key and value rows of the packed weight
    are three blocks with their own feedback matrices, and sample n's signal meets the sum of its own tokens:
    sign(C) with C = sum_n (e_n B^T) (sum_t x_nt)^T, against a float64 loop over samples and tokens; the output
    projection's input is the attention output written out in float64."""
    from ghl_snn import FeedbackSign
    torch.manual_seed(12)
    mha = nn.MultiheadAttention(8, 2)  # batch_first=False: (L, N, E)
    query, key, value = torch.randn(3, 2, 8), torch.randn(4, 2, 8), torch.randn(4, 2, 8)
    error = torch.randn(2, 5)
    modulator = FeedbackSign(seed=3)
    rule = GHL(mha, modulator=modulator)
    mha(query, key, value)[0].sum().backward()
    rule.step(error=error)
    forward = mha_forward64(mha, *(t.transpose(0, 1) for t in (query, key, value)))
    blocks = {"in_proj_weight[0:8]": (query.transpose(0, 1), slice(0, 8)),
              "in_proj_weight[8:16]": (key.transpose(0, 1), slice(8, 16)),
              "in_proj_weight[16:24]": (value.transpose(0, 1), slice(16, 24))}
    assert set(modulator.matrices) == set(blocks) | {"out_proj.weight"}

    def loop_credit(name, tokens):
        matrix = modulator.matrices[name].double()
        credit = torch.zeros(matrix.shape[0], tokens.shape[-1], dtype=torch.float64)
        for n in range(tokens.shape[0]):
            delta = matrix @ error[n].double()
            for t in range(tokens.shape[1]):
                credit += torch.outer(delta, tokens[n, t].double())
        return credit
    for name, (tokens, rows) in blocks.items():
        got = mha.in_proj_weight.grad[rows]
        assert torch.equal(got.sign(), loop_credit(name, tokens).sign()), name
    got = mha.out_proj.weight.grad
    assert torch.equal(got.sign(), loop_credit("out_proj.weight", forward["attended"]).sign())


def test_feedback_sign_on_swin_window_attention_meets_each_samples_windows():
    """Swin's window attention projects (samples x windows, tokens, C): sample n's signal meets the tokens of its
    own windows, whose sum is the sum of its (rolled, unpadded) input map."""
    swin = pytest.importorskip("torchvision.models.swin_transformer")
    from ghl_snn import FeedbackSign
    torch.manual_seed(13)
    attention = swin.ShiftedWindowAttention(8, [2, 2], [1, 1], num_heads=2)
    x, error = torch.randn(3, 4, 4, 8), torch.randn(3, 5)
    modulator = FeedbackSign(seed=4)
    rule = GHL(attention, modulator=modulator)
    attention(x).sum().backward()
    rule.step(error=error)
    matrix = modulator.matrices["qkv.weight"].double()
    expected = sum(torch.outer(matrix @ error[n].double(), x[n].double().sum(dim=(0, 1))) for n in range(3))
    assert torch.equal(attention.qkv.weight.grad.sign(), expected.sign())
