"""Convolution and pooling ops: values against naive loop references (and torch when importable),
float64 gradchecks of every input over shapes drawn with hypothesis (strides, padding, dilation,
groups, non-square and 1x1 kernels, size-1 axes, non-contiguous inputs), errors and dtypes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import ShapeError, Tensor, gradcheck

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the torch comparisons are skipped, the rest still runs
    torch = None

SETTINGS = settings(max_examples=15, deadline=None)
layouts = st.sampled_from(["contiguous", "transposed", "sliced", "channels_last"])


def array(rng, shape, layout="contiguous"):
    """A float64 array of the 4-d `shape`, laid out as a fresh array or as a non-contiguous view."""
    B, C, H, W = shape
    if layout == "transposed":
        return rng.standard_normal((B, C, W, H)).transpose(0, 1, 3, 2)
    if layout == "sliced":
        return rng.standard_normal((B, 2 * C, H, 2 * W))[:, ::2, :, ::2]
    if layout == "channels_last":
        return rng.standard_normal((B, H, W, C)).transpose(0, 3, 1, 2)
    return rng.standard_normal(shape)


def t64(a, requires_grad=False):
    return Tensor(a, dtype="float64", requires_grad=requires_grad)


# ---------------------------------------------------------------------- naive references (loops)
def conv2d_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    B, C, H, W = x.shape
    co, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((B, co, Ho, Wo))
    per_group = co // groups
    for o in range(co):
        g = o // per_group
        for y in range(Ho):
            for xx in range(Wo):
                for i in range(kh):
                    for j in range(kw):
                        pix = xp[:, g * cg:(g + 1) * cg, sh * y + dh * i, sw * xx + dw * j]  # (B, cg)
                        out[:, o, y, xx] += pix @ w[o, :, i, j]
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv_transpose2d_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1,
                         dilation=(1, 1)):
    """Scatter definition: input pixel (u, v) adds x[:, c, u, v] * w[c, o] at (s u + d i - p, s v + d j - p)."""
    B, C, H, W = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw), (oph, opw) = stride, padding, dilation, output_padding
    full = np.zeros((B, cog * groups, (H - 1) * sh + dh * (kh - 1) + 1 + oph, (W - 1) * sw + dw * (kw - 1) + 1 + opw))
    cig = C // groups
    for c in range(C):
        g = c // cig
        for u in range(H):
            for v in range(W):
                for i in range(kh):
                    for j in range(kw):
                        full[:, g * cog:(g + 1) * cog, sh * u + dh * i, sw * v + dw * j] += \
                            x[:, c, u, v][:, None] * w[c, :, i, j][None, :]
    out = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def pool_ref(x, kernel, stride, padding, kind):
    B, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((B, C, Ho, Wo))
    for y in range(Ho):
        for xx in range(Wo):
            win = xp[:, :, sh * y:sh * y + kh, sw * xx:sw * xx + kw]
            out[:, :, y, xx] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return out


# ---------------------------------------------------------------------- hypothesis cases
@st.composite
def conv_cases(draw):
    """(x shape, weight shape as conv2d, groups, stride, padding, dilation) with a positive output size."""
    kind = draw(st.sampled_from(["groups1", "groups2", "depthwise"]))
    if kind == "groups1":
        groups, c_in, c_out = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "groups2":
        groups, c_in, c_out = 2, 2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    else:
        c_in = draw(st.integers(1, 3))
        groups, c_out = c_in, c_in * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    H = max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]) + draw(st.integers(0, 3))
    W = max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 3))
    B = draw(st.integers(1, 2))
    return (B, c_in, H, W), (c_out, c_in // groups, kh, kw), groups, stride, padding, dilation


@SETTINGS
@given(conv_cases(), layouts, layouts, st.booleans(), st.integers(0, 10_000))
def test_conv2d_values_and_gradcheck(case, x_layout, w_layout, with_bias, seed):
    x_shape, w_shape, groups, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w = array(rng, x_shape, x_layout), array(rng, w_shape, w_layout)
    b = rng.standard_normal(w_shape[0]) if with_bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    out = F.conv2d(t64(x), t64(w), None if b is None else t64(b), **kw)
    np.testing.assert_allclose(out.numpy(), conv2d_ref(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    if with_bias:
        gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kw), x, w, b)
    else:
        gradcheck(lambda x, w: F.conv2d(x, w, **kw), x, w)


@st.composite
def conv_transpose_cases(draw):
    x_shape, w_conv, groups, stride, padding, dilation = draw(conv_cases())
    # read the conv2d weight (C_out, C_in/g, ...) as a transposed-conv weight (C_in', C_out'/g, ...):
    # the transposed conv maps x with C_out channels (the conv's output) back to C_in channels
    c_out, cg, kh, kw = w_conv
    x_t = (x_shape[0], c_out, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    w_t = (c_out, cg, kh, kw)
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    out_hw = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1
              for n, k, s, p, d, op in zip(x_t[2:], (kh, kw), stride, padding, dilation, output_padding)]
    padding = tuple(p if o > 0 else 0 for p, o in zip(padding, out_hw))  # keep the output size positive
    return x_t, w_t, groups, stride, padding, output_padding, dilation


@SETTINGS
@given(conv_transpose_cases(), layouts, st.booleans(), st.integers(0, 10_000))
def test_conv_transpose2d_values_and_gradcheck(case, layout, with_bias, seed):
    x_shape, w_shape, groups, stride, padding, output_padding, dilation = case
    rng = np.random.default_rng(seed)
    x, w = array(rng, x_shape, layout), array(rng, w_shape)
    b = rng.standard_normal(w_shape[1] * groups) if with_bias else None
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)

    out = F.conv_transpose2d(t64(x), t64(w), None if b is None else t64(b), **kw)
    np.testing.assert_allclose(out.numpy(), conv_transpose2d_ref(x, w, b, **kw), rtol=1e-10, atol=1e-10)
    if with_bias:
        gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw), x, w, b)
    else:
        gradcheck(lambda x, w: F.conv_transpose2d(x, w, **kw), x, w)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(z, W), x> = <z, conv_transpose2d(x, W)> for every z, x (same stride/padding/dilation/groups)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2)
    z = rng.standard_normal((2, 4, 9, 11))
    y = F.conv2d(t64(z), t64(w), **kw).numpy()
    x = rng.standard_normal(y.shape)
    zt = F.conv_transpose2d(t64(x), t64(w), output_padding=(0, 2), **kw).numpy()  # back to z's size
    assert zt.shape == z.shape
    np.testing.assert_allclose((y * x).sum(), (z * zt).sum(), rtol=1e-10)


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    H = kernel[0] + draw(st.integers(0, 4))
    W = kernel[1] + draw(st.integers(0, 4))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), kernel, stride, padding


@pytest.mark.parametrize("kind", ["max", "avg"])
@SETTINGS
@given(pool_cases(), layouts, st.integers(0, 10_000))
def test_pool_values_and_gradcheck(kind, case, layout, seed):
    shape, kernel, stride, padding = case
    x = array(np.random.default_rng(seed), shape, layout)  # random floats: no ties within a window
    op = F.max_pool2d if kind == "max" else F.avg_pool2d
    np.testing.assert_allclose(op(t64(x), kernel, stride, padding).numpy(),
                               pool_ref(x, kernel, stride, padding, kind), rtol=1e-12, atol=1e-12)
    gradcheck(lambda x: op(x, kernel, stride, padding), x)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_overlapping_windows_accumulate(kind):
    """Kernel 3, stride 2, padding 1: pixels on window borders are read by two or four windows."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 8))
    op = F.max_pool2d if kind == "max" else F.avg_pool2d
    xt = t64(x, requires_grad=True)
    y = op(xt, 3, stride=2, padding=1)
    assert y.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(y.numpy(), pool_ref(x, (3, 3), (2, 2), (1, 1), kind), rtol=1e-12)
    y.sum().backward()
    if kind == "avg":  # each pixel gets 1/9 per window reading it: 1, 2 or 4 windows inside
        assert set(np.round(xt.grad[0, 0] * 9, 6).ravel()) <= {1.0, 2.0, 4.0}
    else:  # each window's gradient goes to exactly one pixel: the totals add up to the window count
        assert xt.grad.sum() == pytest.approx(y.size)
        assert xt.grad.max() >= 2  # some pixel is the maximum of two overlapping windows
    gradcheck(lambda x: op(x, 3, 2, 1), x)


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
    x = t64(np.zeros((1, 1, 2, 2)), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[[1, 0], [0, 0]]]])


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), layouts, st.integers(0, 10_000))
def test_upsample_nearest(sh, sw, layout, seed):
    x = array(np.random.default_rng(seed), (2, 3, 3, 2), layout)
    ref = x.repeat(sh, axis=2).repeat(sw, axis=3)
    np.testing.assert_array_equal(F.upsample_nearest(t64(x), scale_factor=(sh, sw)).numpy(), ref)
    np.testing.assert_array_equal(F.interpolate(t64(x), scale_factor=(sh, sw)).numpy(), ref)
    np.testing.assert_array_equal(F.interpolate(t64(x), size=(3 * sh, 2 * sw)).numpy(), ref)
    # positional arguments in torch's order: size, scale_factor, mode
    np.testing.assert_array_equal(F.interpolate(t64(x), (3 * sh, 2 * sw), None, "nearest").numpy(), ref)
    np.testing.assert_array_equal(F.interpolate(t64(x), None, (sh, sw), "nearest").numpy(), ref)
    gradcheck(lambda x: F.upsample_nearest(x, scale_factor=(sh, sw)), x)


def test_interpolate_other_modes_are_a_clear_error():
    with pytest.raises(ValueError, match="bilinear.*nearest"):
        F.interpolate(Tensor(np.zeros((1, 1, 2, 2))), scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match="integer"):
        F.upsample_nearest(Tensor(np.zeros((1, 1, 2, 2))), scale_factor=1.5)
    with pytest.raises(ValueError, match="multiple"):
        F.interpolate(Tensor(np.zeros((1, 1, 2, 2))), size=3)


# ---------------------------------------------------------------------- against torch
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not importable")


def _torch_grads(fn, *arrays):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    g = np.random.default_rng(7).standard_normal(tuple(out.shape))
    out.backward(torch.tensor(g))
    return out.detach().numpy(), [t.grad.numpy() for t in ts], g


def _our_grads(fn, g, *arrays):
    ts = [t64(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(g)
    return out.numpy(), [t.grad for t in ts]


def _compare(ours_fn, torch_fn, *arrays):
    ref, ref_grads, g = _torch_grads(torch_fn, *arrays)
    out, grads = _our_grads(ours_fn, g, *arrays)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


CONV_CONFIGS = [  # (x shape, weight shape, stride, padding, dilation, groups)
    ((2, 3, 9, 8), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((1, 3, 7, 7), (6, 1, 3, 3), 2, 1, 1, 3),              # depthwise, channel multiplier 2
    ((2, 2, 8, 8), (8, 2, 1, 1), 3, 0, 1, 1),              # 1x1, stride > kernel
    ((2, 1, 6, 6), (5, 1, 3, 3), 1, 2, 2, 1),              # C_out >= 3 C_in (col2im input gradient)
    ((2, 4, 10, 9), (3, 4, 4, 4), 2, 1, 1, 1),             # stride 2, even kernel
]


@needs_torch
@pytest.mark.parametrize("config", CONV_CONFIGS)
def test_conv2d_matches_torch(config):
    x_shape, w_shape, stride, padding, dilation, groups = config
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    _compare(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
             lambda x, w, b: TF.conv2d(x, w, b, stride, padding, dilation, groups), x, w, b)


def _output_paddings(config):
    """0, and 1 where it is allowed (smaller than the stride or the dilation on both axes)."""
    _, _, stride, _, dilation, _ = config
    ok = all(max(s, d) > 1 for s, d in zip(np.broadcast_to(stride, 2), np.broadcast_to(dilation, 2)))
    return [0, 1] if ok else [0]


@needs_torch
@pytest.mark.parametrize("config, output_padding", [(c, op) for c in CONV_CONFIGS for op in _output_paddings(c)])
def test_conv_transpose2d_matches_torch(config, output_padding):
    x_shape, w_shape, stride, padding, dilation, groups = config
    rng = np.random.default_rng(4)
    c_out, cg, kh, kw = w_shape  # a conv2d weight read as a transposed-conv weight: C_out -> cg * groups
    x = rng.standard_normal((x_shape[0], c_out, 4, 5))
    w, b = rng.standard_normal(w_shape), rng.standard_normal(cg * groups)
    _compare(lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation),
             lambda x, w, b: TF.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation), x, w, b)


@needs_torch
def test_conv_transpose2d_output_padding_from_dilation_matches_torch():
    """output_padding may reach the dilation when it is larger than the stride."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 2, 4, 3)), rng.standard_normal((2, 3, 3, 2))
    _compare(lambda x, w: F.conv_transpose2d(x, w, stride=1, output_padding=(2, 1), dilation=(3, 2)),
             lambda x, w: TF.conv_transpose2d(x, w, stride=1, output_padding=(2, 1), dilation=(3, 2)), x, w)


@needs_torch
@pytest.mark.parametrize("args", [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 0)), (3, 3, 0)])
def test_pools_match_torch(args):
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 8))
    k, s, p = args
    _compare(lambda x: F.max_pool2d(x, k, s, p), lambda x: TF.max_pool2d(x, k, s, p), x)
    _compare(lambda x: F.avg_pool2d(x, k, s, p), lambda x: TF.avg_pool2d(x, k, s, p), x)


@needs_torch
def test_upsample_matches_torch():
    x = np.random.default_rng(8).standard_normal((2, 3, 4, 5))
    _compare(lambda x: F.interpolate(x, scale_factor=2), lambda x: TF.interpolate(x, scale_factor=2, mode="nearest"), x)


# ---------------------------------------------------------------------- layers together, dtypes, errors
def test_stack_of_layers_and_channels_last_outputs():
    """conv outputs are NCHW views of NHWC memory: other ops must treat them as ordinary arrays."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 1, 8, 8))
    w1, w2 = rng.standard_normal((4, 1, 3, 3)), rng.standard_normal((3, 4, 3, 3))

    def net(x, w1, w2):
        h = F.relu(F.conv2d(x, w1, padding=1))
        h = F.max_pool2d(h, 2)
        h = F.upsample_nearest(F.conv2d(h, w2, padding=1), scale_factor=2)
        h = F.conv_transpose2d(h, w2, stride=2)  # the same weight read as (C_in, C_out, kh, kw)
        return F.reshape(F.avg_pool2d(h, 3, 2, 1), (2, -1))

    out = net(t64(x), t64(w1), t64(w2))
    assert out.shape == (2, 4 * 9 * 9)
    gradcheck(net, x, w1, w2, max_elements=20)


@pytest.mark.parametrize("c_in, c_out, groups", [(1, 8, 1), (16, 16, 1), (24, 24, 2)])
def test_weight_gradient_of_a_larger_batch(c_in, c_out, groups):
    """Enough output pixels that the weight gradient's sum over them is split into chunks
    (with a remainder), checked against dW[o, c, i, j] = sum_{b,y,x} dY[b, o, y, x] x_pad[b, c, y + i, x + j]."""
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((3, c_in, 15, 14)), rng.standard_normal((c_out, c_in // groups, 3, 3))
    xt, wt = t64(x), t64(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=1, groups=groups)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cg, og = c_in // groups, c_out // groups
    ref = np.zeros_like(w)
    for k in range(groups):
        for i in range(3):
            for j in range(3):
                ref[k * og:(k + 1) * og, :, i, j] = np.einsum(
                    "boyx,bcyx->oc", g[:, k * og:(k + 1) * og], xp[:, k * cg:(k + 1) * cg, i:i + 15, j:j + 14])
    np.testing.assert_allclose(wt.grad, ref, rtol=1e-10, atol=1e-10)


def test_input_without_grad_gets_none_and_weight_still_gets_its_gradient():
    rng = np.random.default_rng(10)
    x = t64(rng.standard_normal((2, 3, 5, 5)))
    w = t64(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(w.grad, np.broadcast_to(
        np.stack([x.data[:, :, i:i + 3, j:j + 3].sum(axis=(0, 2, 3)) for i in range(3) for j in range(3)], -1)
        .reshape(3, 3, 3), (4, 3, 3, 3)))


@pytest.mark.parametrize("name", ["conv2d", "depthwise_conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
                                  "upsample_nearest"])
def test_float32_stays_float32(name):
    rng = np.random.default_rng(11)
    x = Tensor(rng.standard_normal((2, 4, 6, 6)), requires_grad=True)
    assert x.dtype == np.float32
    params = []
    if name == "conv2d":
        params = [Tensor(rng.standard_normal((6, 2, 3, 3)), requires_grad=True),
                  Tensor(np.zeros(6), requires_grad=True)]
        out = F.conv2d(x, *params, stride=2, padding=1, groups=2)
    elif name == "depthwise_conv2d":
        params = [Tensor(rng.standard_normal((8, 1, 3, 3)), requires_grad=True)]
        out = F.conv2d(x, *params, padding=1, groups=4)
    elif name == "conv_transpose2d":
        params = [Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True),
                  Tensor(np.zeros(3), requires_grad=True)]
        out = F.conv_transpose2d(x, *params, stride=2, padding=1, output_padding=1)
    elif name == "upsample_nearest":
        out = F.upsample_nearest(x, scale_factor=2)
    else:
        out = getattr(F, name)(x, 3, 2, 1)
    assert out.dtype == np.float32
    out.sum().backward()
    for t in [x] + params:
        assert t.grad.dtype == np.float32


def test_conv2d_channel_mismatch_names_op_and_shapes():
    with pytest.raises(ShapeError, match=r"conv2d.*\(1, 3, 5, 5\).*\(4, 2, 3, 3\)"):
        F.conv2d(Tensor(np.zeros((1, 3, 5, 5))), Tensor(np.zeros((4, 2, 3, 3))))


def test_conv2d_groups_must_divide_channels():
    with pytest.raises(ShapeError, match=r"conv2d.*groups=2.*\(1, 3, 5, 5\)"):
        F.conv2d(Tensor(np.zeros((1, 3, 5, 5))), Tensor(np.zeros((4, 1, 3, 3))), groups=2)
    with pytest.raises(ShapeError, match=r"conv2d.*groups=2"):
        F.conv2d(Tensor(np.zeros((1, 4, 5, 5))), Tensor(np.zeros((3, 2, 3, 3))), groups=2)
    with pytest.raises(ShapeError, match=r"conv_transpose2d.*groups=2"):
        F.conv_transpose2d(Tensor(np.zeros((1, 3, 5, 5))), Tensor(np.zeros((3, 1, 3, 3))), groups=2)


def test_output_size_must_be_positive():
    with pytest.raises(ShapeError, match=r"conv2d.*output size.*\(1, 1, 2, 2\)"):
        F.conv2d(Tensor(np.zeros((1, 1, 2, 2))), Tensor(np.zeros((1, 1, 3, 3))))
    with pytest.raises(ShapeError, match=r"conv2d.*output size"):
        F.conv2d(Tensor(np.zeros((1, 1, 4, 4))), Tensor(np.zeros((1, 1, 3, 3))), dilation=2)
    with pytest.raises(ShapeError, match=r"conv_transpose2d.*output size"):
        F.conv_transpose2d(Tensor(np.zeros((1, 1, 1, 1))), Tensor(np.zeros((1, 1, 1, 1))), padding=1)
    with pytest.raises(ShapeError, match=r"max_pool2d.*output size"):
        F.max_pool2d(Tensor(np.zeros((1, 1, 2, 2))), 3)


def test_other_argument_errors():
    x = Tensor(np.zeros((1, 2, 5, 5)))
    with pytest.raises(ShapeError, match=r"conv2d.*4-D"):
        F.conv2d(Tensor(np.zeros((2, 5, 5))), Tensor(np.zeros((1, 2, 3, 3))))
    with pytest.raises(ShapeError, match=r"conv2d: bias"):
        F.conv2d(x, Tensor(np.zeros((3, 2, 3, 3))), Tensor(np.zeros(2)))
    with pytest.raises(ShapeError, match=r"conv_transpose2d.*\(1, 2, 5, 5\).*\(3, 2, 3, 3\)"):
        F.conv_transpose2d(x, Tensor(np.zeros((3, 2, 3, 3))))
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(x, Tensor(np.zeros((2, 2, 3, 3))), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(x, Tensor(np.zeros((3, 2, 3, 3))), stride=0)
    with pytest.raises(ValueError, match="half the kernel"):
        F.max_pool2d(x, 2, padding=2)
