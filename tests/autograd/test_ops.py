"""Gradchecks (float64) and value checks for the elementwise, reduction, shape and linalg ops.

Shapes are drawn with hypothesis and include broadcasting, size-1 axes and non-contiguous
inputs (transposed and sliced views)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import Function, GradcheckError, ShapeError, Tensor, gradcheck

SETTINGS = settings(max_examples=12, deadline=None)
small = st.integers(1, 3)
shapes = st.lists(small, min_size=1, max_size=3).map(tuple)


def noncontig(rng, shape, kind):
    """An array of `shape` that is a transposed or sliced view, not a fresh contiguous array."""
    if kind == "transposed":
        return rng.standard_normal(shape[::-1]).T
    if kind == "sliced":
        return rng.standard_normal(tuple(2 * s for s in shape))[tuple(slice(None, None, 2) for _ in shape)]
    return rng.standard_normal(shape)


layouts = st.sampled_from(["contiguous", "transposed", "sliced"])


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: some axes of b set to 1 or dropped."""
    a = draw(shapes)
    b = tuple(1 if draw(st.booleans()) else s for s in a)
    b = b[draw(st.integers(0, len(b) - 1)):]
    return (a, b) if draw(st.booleans()) else (b, a)


@SETTINGS
@given(broadcast_pair(), layouts, st.integers(0, 10_000))
def test_binary_arithmetic_broadcast(pair, layout, seed):
    rng = np.random.default_rng(seed)
    a, b = noncontig(rng, pair[0], layout), noncontig(rng, pair[1], "contiguous")
    b_pos = np.abs(b) + 0.5  # away from 0 for division and pow
    for fn in [F.add, F.sub, F.mul, F.div, F.maximum, F.minimum]:
        gradcheck(fn, a, b_pos)
    gradcheck(lambda x, y: F.pow(x, y), np.abs(a) + 0.5, b)
    np.testing.assert_allclose(F.div(Tensor(a, dtype="float64"), Tensor(b_pos, dtype="float64")).numpy(), a / b_pos)


UNARY = {
    "exp": (F.exp, np.exp, lambda x: x),
    "log": (F.log, np.log, lambda x: np.abs(x) + 0.5),
    "sqrt": (F.sqrt, np.sqrt, lambda x: np.abs(x) + 0.5),
    "abs": (F.abs, np.abs, lambda x: x + np.sign(x) * 0.1),  # away from the kink
    "neg": (F.neg, np.negative, lambda x: x),
    "tanh": (F.tanh, np.tanh, lambda x: x),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda x: x),
    "relu": (F.relu, lambda x: np.maximum(x, 0), lambda x: x + np.sign(x) * 0.1),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x), lambda x: x + np.sign(x) * 0.1),
    "silu": (F.silu, lambda x: x / (1 + np.exp(-x)), lambda x: x),
    "softplus": (F.softplus, lambda x: np.log1p(np.exp(x)), lambda x: x),
    "gelu": (F.gelu, lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), lambda x: x),
    "pow3": (lambda x: x ** 3, lambda x: x ** 3, lambda x: x),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, lambda x: np.abs(x) + 0.5),
    "clip": (lambda x: F.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), lambda x: np.where(np.abs(np.abs(x) - 0.5) < 0.05, x + 0.2, x)),
}


@pytest.mark.parametrize("name", list(UNARY))
@SETTINGS
@given(shapes, layouts, st.integers(0, 10_000))
def test_unary(name, shape, layout, seed):
    op, ref, prepare = UNARY[name]
    x = prepare(noncontig(np.random.default_rng(seed), shape, layout))
    gradcheck(op, x)
    np.testing.assert_allclose(op(Tensor(x, dtype="float64")).numpy(), ref(x), rtol=1e-6, atol=1e-9)


def test_activations_are_stable_for_large_inputs():
    x = Tensor([-1000.0, 1000.0])
    assert np.isfinite(F.sigmoid(x).numpy()).all() and np.isfinite(F.softplus(x).numpy()).all()
    np.testing.assert_allclose(F.softplus(x).numpy(), [0.0, 1000.0])


def test_where_gradient_goes_to_the_chosen_branch(rng):
    cond = rng.random((3, 4)) > 0.5
    gradcheck(lambda a, b: F.where(cond, a, b), rng.standard_normal((3, 4)), rng.standard_normal((1, 4)))
    gradcheck(lambda a: F.where(cond[:, :1], a, 0.0), rng.standard_normal((3, 4)))


REDUCTIONS = {"sum": (F.sum, np.sum), "mean": (F.mean, np.mean), "var": (F.var, np.var),
              "max": (F.max, np.max), "min": (F.min, np.min),
              "logsumexp": (F.logsumexp, lambda x, axis, keepdims: np.log(np.exp(x).sum(axis=axis, keepdims=keepdims)))}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@SETTINGS
@given(shapes, st.data(), st.booleans(), layouts, st.integers(0, 10_000))
def test_reductions(name, shape, data, keepdims, layout, seed):
    op, ref = REDUCTIONS[name]
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                               st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True).map(tuple)))
    x = noncontig(np.random.default_rng(seed), shape, layout)
    gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), x)
    np.testing.assert_allclose(op(Tensor(x, dtype="float64"), axis=axis, keepdims=keepdims).numpy(),
                               ref(x, axis=axis, keepdims=keepdims), rtol=1e-6, atol=1e-12)


def test_var_ddof_and_max_ties():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    np.testing.assert_allclose(F.var(Tensor(x, dtype="float64"), axis=1, ddof=1).numpy(), np.var(x, axis=1, ddof=1))
    t = Tensor(x, requires_grad=True, dtype="float64")
    F.max(t, axis=1).sum().backward()
    np.testing.assert_allclose(t.grad, [[0, 0.5, 0.5], [0.5, 0.5, 0]])  # ties share the gradient


def test_logsumexp_is_stable():
    x = Tensor([[1000.0, 1000.0], [-1000.0, -1000.0]])
    np.testing.assert_allclose(F.logsumexp(x, axis=1).numpy(), [1000 + np.log(2), -1000 + np.log(2)], rtol=1e-6)


@SETTINGS
@given(shapes, layouts, st.integers(0, 10_000))
def test_reshape_transpose_expand(shape, layout, seed):
    rng = np.random.default_rng(seed)
    x = noncontig(rng, shape, layout)
    gradcheck(lambda t: F.reshape(t, (-1,)) * np.arange(x.size), x)
    perm = tuple(rng.permutation(len(shape)))
    gradcheck(lambda t: F.transpose(t, perm), x)
    gradcheck(lambda t: F.expand(F.unsqueeze(t, 0), (2,) + shape), x)
    gradcheck(lambda t: F.flatten(F.unsqueeze(t, 0), 1), x)


def test_expand_size_one_axis(rng):
    gradcheck(lambda t: F.expand(t, (3, 4)), rng.standard_normal((3, 1)))
    gradcheck(lambda t: F.squeeze(t, 1), rng.standard_normal((3, 1)))


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), st.integers(0, 10_000))
def test_getitem_basic_and_advanced(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gradcheck(lambda t: t[1:, ::2], x)
    gradcheck(lambda t: t[..., -1], x)
    gradcheck(lambda t: t[None, 0], x)
    idx = rng.integers(0, shape[0], size=5)  # repeated indices: gradients must accumulate
    gradcheck(lambda t: t[idx], x)
    gradcheck(lambda t: t[idx, 0], x)
    mask = rng.random(shape) > 0.5
    gradcheck(lambda t: t[mask], x)
    gradcheck(lambda t: t[Tensor(idx)], x)


def test_repeated_index_accumulates():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 0.0, 1.0])


@SETTINGS
@given(shapes, st.integers(0, 10_000), st.integers(1, 3))
def test_concat_stack_split_pad(shape, seed, n):
    rng = np.random.default_rng(seed)
    axis = int(rng.integers(0, len(shape)))
    arrays = []
    for _ in range(n):
        s = list(shape)
        s[axis] = int(rng.integers(1, 3))
        arrays.append(rng.standard_normal(s))
    gradcheck(lambda *ts: F.concat(list(ts), axis=axis), *arrays)
    gradcheck(lambda *ts: F.stack(list(ts), axis=-1), *[rng.standard_normal(shape) for _ in range(n)])
    whole = rng.standard_normal(tuple(s * 2 for s in shape))
    gradcheck(lambda t: F.concat(F.split(t, 2, axis=axis)[::-1], axis=axis), whole)
    width = tuple((int(rng.integers(0, 2)), int(rng.integers(0, 3))) for _ in shape)
    gradcheck(lambda t: F.pad_width(t, width, constant_values=0.5), arrays[0])
    np.testing.assert_allclose(F.pad_width(Tensor(arrays[0], dtype="float64"), width, constant_values=0.5).numpy(),
                               np.pad(arrays[0], width, constant_values=0.5))


def np_torch_pad(x, pad, value=0.0):
    """PyTorch's F.pad in NumPy: flat (before, after) pairs from the last axis backwards, negatives crop."""
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)][::-1]
    widths = [(0, 0)] * (x.ndim - len(pairs)) + pairs
    kept = x[tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))]
    return np.pad(kept, [(max(lo, 0), max(hi, 0)) for lo, hi in widths], constant_values=value)


@SETTINGS
@given(st.lists(st.integers(2, 4), min_size=1, max_size=3).map(tuple), layouts, st.integers(0, 10_000))
def test_pad_torch_form_pads_and_crops_from_the_last_axis(shape, layout, seed):
    rng = np.random.default_rng(seed)
    x = noncontig(rng, shape, layout)
    k = int(rng.integers(1, len(shape) + 1))                        # how many trailing axes get widths
    pad = tuple(int(w) for w in rng.integers(-1, 3, size=2 * k))    # -1 crops one element
    np.testing.assert_array_equal(F.pad(Tensor(x, dtype="float64"), pad, value=0.5).numpy(),
                                  np_torch_pad(x, pad, 0.5))
    gradcheck(lambda t: F.pad(t, pad, value=0.5), x)


def test_pad_torch_form_on_a_transposed_view(rng):
    x = rng.standard_normal((3, 2, 4)).transpose(2, 0, 1)           # (4, 3, 2), not contiguous
    assert not x.flags.c_contiguous
    out = F.pad(Tensor(x, dtype="float64"), (1, 2, -1, 0))          # last axis +1 +2, the one before: crop 1
    assert out.shape == (4, 2, 5)
    np.testing.assert_array_equal(out.numpy(), np.pad(x[:, 1:, :], ((0, 0), (0, 0), (1, 2))))
    gradcheck(lambda t: F.pad(t, (1, 2, -1, 0)), x)
    gradcheck(lambda t: F.pad_width(t, ((0, 1), (2, 0), (1, 1)), constant_values=-3.0), x)


def test_pad_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 4, 5))
    for pad in [(1, 2), (1, 0, 2, 3), (-1, 2, 0, -2), (1, 1, 1, 1, 1, 1), ()]:
        np.testing.assert_array_equal(F.pad(Tensor(x, dtype="float64"), pad, value=0.25).numpy(),
                                      torch.nn.functional.pad(torch.from_numpy(x), pad, value=0.25).numpy())


def test_pad_errors():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="odd length"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ShapeError, match=r"3 \(before, after\) pairs for a 2-d input"):
        F.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ShapeError, match="crops axis 1 of size 3 by 4"):
        F.pad(x, (-2, -2))
    with pytest.raises(ValueError, match="mode 'reflect' is not supported"):
        F.pad(x, (1, 1), mode="reflect")
    with pytest.raises(TypeError, match="integers"):
        F.pad(x, (1.5, 1))
    with pytest.raises(ShapeError, match="pad_width.*1 \\(before, after\\) pairs for a 2-d input"):
        F.pad_width(x, ((1, 1),))
    with pytest.raises(ValueError, match="non-negative"):
        F.pad_width(x, ((0, 0), (-1, 0)))
    with pytest.raises(TypeError, match="one \\(before, after\\) pair of integers per axis"):
        F.pad_width(x, (1, 2))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.sampled_from([(), (1,), (2,), (2, 1)]),
       st.sampled_from([(), (1,), (2,)]), layouts, st.integers(0, 10_000))
def test_matmul_batched_broadcast(m, k, n, batch_a, batch_b, layout, seed):
    rng = np.random.default_rng(seed)
    try:
        np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        return
    a = noncontig(rng, batch_a + (m, k), layout)
    b = rng.standard_normal(batch_b + (k, n))
    gradcheck(F.matmul, a, b)
    np.testing.assert_allclose(F.matmul(Tensor(a, dtype="float64"), Tensor(b, dtype="float64")).numpy(), a @ b)


def test_matmul_vectors(rng):
    gradcheck(F.matmul, rng.standard_normal(3), rng.standard_normal((3, 2)))
    gradcheck(F.matmul, rng.standard_normal((2, 3)), rng.standard_normal(3))
    gradcheck(F.matmul, rng.standard_normal(3), rng.standard_normal(3))


@SETTINGS
@given(st.sampled_from([(), (2,), (2, 3)]), st.integers(1, 3), st.integers(1, 3), st.booleans(), layouts,
       st.integers(0, 10_000))
def test_linear(lead, fin, fout, bias, layout, seed):
    rng = np.random.default_rng(seed)
    x = noncontig(rng, lead + (fin,), layout)
    w, b = rng.standard_normal((fout, fin)), rng.standard_normal(fout)
    if bias:
        gradcheck(F.linear, x, w, b)
        expected = x @ w.T + b
    else:
        gradcheck(F.linear, x, w)
        expected = x @ w.T
    out = F.linear(*[Tensor(v, dtype="float64") for v in ([x, w, b] if bias else [x, w])])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("spec,shapes_", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 2), (1, 2, 4, 2)]),
    ("ij->j", [(3, 4)]),                 # an index summed away only in the operand
    ("i,j->ij", [(3,), (2,)]),
    ("...ij,jk->...ik", [(2, 3, 4), (4, 2)]),
    ("bi,i->b", [(3, 4), (4,)]),
])
def test_einsum(spec, shapes_, rng):
    arrays = [rng.standard_normal(s) for s in shapes_]
    gradcheck(lambda *ts: F.einsum(spec, *ts), *arrays)
    out = F.einsum(spec, *[Tensor(a, dtype="float64") for a in arrays])
    np.testing.assert_allclose(out.numpy(), np.einsum(spec, *arrays), rtol=1e-10)


def test_einsum_errors():
    a = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="output explicitly"):
        F.einsum("ij,jk", a, a)
    with pytest.raises(ValueError, match="einsum"):
        F.einsum("ij,jk->ik", a, a)


def test_astype_and_device_copy_keep_gradients(rng):
    # a float32 round trip in the middle: a step and tolerance suited to float32
    gradcheck(lambda t: (t.astype("float32").astype("float64") * 2).sum(), rng.standard_normal((2, 2)), eps=1e-2, atol=1e-3)
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    x.to("cpu").sum().backward()
    np.testing.assert_allclose(x.grad, 1.0)


def test_gradcheck_catches_a_wrong_backward(rng):
    class BadSquare(Function):
        op_name = "bad_square"

        def forward(self, a):
            self.save_for_backward(a)
            return a * a

        def backward(self, g):
            return g * self.saved[0]  # should be 2 * a * g

    with pytest.raises(GradcheckError, match=r"bad_square.*analytic"):
        gradcheck(lambda t: BadSquare.apply(t), rng.standard_normal(3))


def test_float32_stays_float32(rng):
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    y = F.gelu(F.linear(x, w)) * 0.5 + 1.0
    y = F.logsumexp(y, axis=1).mean() + F.var(y) + (y ** 2).mean()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


# ---------------------------------------------------------------------- numerics at the edges (PyTorch's answers)
def test_logsumexp_of_infinite_slices():
    x = Tensor([[-np.inf, -np.inf], [-np.inf, 1.0], [np.inf, 1.0]], requires_grad=True)
    out = F.logsumexp(x, axis=1)
    np.testing.assert_array_equal(out.numpy(), [-np.inf, 1.0, np.inf])   # not NaN: log(0) = -inf, log(inf) = inf
    with np.errstate(invalid="ignore"):    # inf - inf in the +inf row
        out.backward(np.ones(3, np.float32))
    # all -inf: no element reaches the sum, gradient 0 (PyTorch's exp(a - lse) is NaN there; 0 adds up harmlessly);
    # -inf beside 1: softmax weights (0, 1); +inf: exp(inf - inf) is undefined, NaN as in PyTorch
    np.testing.assert_array_equal(x.grad[:2], [[0.0, 0.0], [0.0, 1.0]])
    assert np.isnan(x.grad[2, 0]) and x.grad[2, 1] == 0.0
    assert F.logsumexp(Tensor([[-np.inf, -np.inf]]), axis=None).item() == -np.inf
    assert np.isnan(F.logsumexp(Tensor([np.nan, 1.0])).item())           # NaN stays NaN
    empty = F.logsumexp(Tensor(np.zeros((2, 0))), axis=1)                 # log of an empty sum, as PyTorch
    np.testing.assert_array_equal(empty.numpy(), [-np.inf, -np.inf])
    gradcheck(lambda t: F.logsumexp(t, axis=1), np.array([[-np.inf, 0.3, -1.2], [0.5, -np.inf, 2.0]]))


def test_max_min_with_nan_and_inf():
    x = Tensor([[np.nan, 1.0, 2.0], [np.inf, 1.0, np.inf], [-np.inf, -np.inf, -np.inf]], requires_grad=True)
    out = F.max(x, axis=1)
    np.testing.assert_array_equal(out.numpy(), [np.nan, np.inf, -np.inf])   # NaN propagates, as in PyTorch
    out.backward(np.ones(3, np.float32))
    # the gradient goes to the NaN (PyTorch's), and ties (inf, inf) / (-inf, -inf, -inf) share it: no NaN
    np.testing.assert_allclose(x.grad, [[1, 0, 0], [0.5, 0, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    y = Tensor([np.nan, np.nan, 0.0], requires_grad=True)
    F.min(y).backward()
    np.testing.assert_allclose(y.grad, [0.5, 0.5, 0.0])


def test_reductions_over_empty_and_single_element_axes():
    with pytest.raises(ShapeError, match=r"max: cannot reduce over axis 1 of size 0 \(input \(2, 0\)\)"):
        F.max(Tensor(np.zeros((2, 0))), axis=1)
    with pytest.raises(ShapeError, match=r"min: cannot reduce over axis 0 of size 0"):
        F.min(Tensor(np.zeros(0)))
    x = Tensor(np.zeros((2, 0)), requires_grad=True)
    with np.errstate(invalid="ignore", divide="ignore"), pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        m = F.mean(x, axis=1)                       # the mean of nothing is NaN, as in PyTorch
        assert np.isnan(m.numpy()).all() and F.sum(x, axis=1).numpy().tolist() == [0.0, 0.0]
        m.sum().backward()
    assert x.grad.shape == (2, 0)
    one = Tensor([[3.0]], requires_grad=True, dtype="float64")
    assert F.var(one, axis=1).item() == 0.0         # ddof=0 of one element: 0
    with np.errstate(invalid="ignore", divide="ignore"):
        v = F.var(one, axis=1, ddof=1)              # no degree of freedom left: NaN, as in PyTorch
        v.sum().backward()                          # and a NaN gradient, not a ZeroDivisionError
    assert np.isnan(v.item()) and np.isnan(one.grad).all()


def test_sqrt_and_log_at_zero_match_pytorch():
    x = Tensor([0.0, 4.0], requires_grad=True)
    y = F.sqrt(x)
    with np.errstate(divide="ignore"):
        y.backward(np.ones(2, np.float32))
    np.testing.assert_array_equal(x.grad, [np.inf, 0.25])   # d sqrt / dx at 0 = inf, as in PyTorch
    x = Tensor([0.0, 1.0], requires_grad=True)
    with np.errstate(divide="ignore"):
        y = F.log(x)
        y.backward(np.ones(2, np.float32))
    np.testing.assert_array_equal(y.numpy(), [-np.inf, 0.0])
    np.testing.assert_array_equal(x.grad, [np.inf, 1.0])
