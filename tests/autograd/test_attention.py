"""scaled_dot_product_attention: gradients (gradcheck in float64) and values against NumPy with boolean,
additive and causal masks, broadcast and non-contiguous operands, fully masked rows, dropout with a
fixed seed, and errors that name the op."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import autograd.functional as F
from autograd import ShapeError, Tensor, _threads, gradcheck
from tests.autograd.numpy_reference import np_softmax, randn

SOME = settings(max_examples=15, deadline=None)


# ---------------------------------------------------------------------- attention
def np_attention(q, k, v, keep=None, bias=None):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    return np_softmax(s, -1) @ v


@SOME
@given(batch=st.sampled_from([(), (1,), (2,), (1, 2), (2, 3)]), Tq=st.integers(1, 3), Tk=st.integers(1, 3),
       d=st.integers(1, 3), dv=st.integers(1, 3), mask=st.sampled_from(["none", "bool", "float", "causal"]),
       seed=st.integers(0, 2**16))
def test_attention_gradients_and_values(batch, Tq, Tk, d, dv, mask, seed):
    rng = np.random.default_rng(seed)
    q, k, v = randn(rng, *batch, Tq, d), randn(rng, *batch, Tk, d), randn(rng, *batch, Tk, dv)
    keep = bias = None
    if mask == "bool":  # broadcast over the leading (head) axis, every row keeps one key
        keep = rng.random((Tq, Tk)) < 0.6
        keep[np.arange(Tq), rng.integers(0, Tk, size=Tq)] = True
        if len(batch) == 2:
            keep = np.broadcast_to(keep, (batch[0], 1, Tq, Tk)).copy()
    if mask == "causal":
        Tk = Tq
        k, v = randn(rng, *batch, Tk, d), randn(rng, *batch, Tk, dv)
    if mask == "float":
        bias = randn(rng, 1, Tk)  # broadcast over queries and batch; differentiated too
        assert gradcheck(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, attn_mask=m), q, k, v, bias)
    else:
        fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=keep,  # noqa: E731
                                                            is_causal=mask == "causal")
        assert gradcheck(fn, q, k, v)
    if mask == "causal":
        keep = np.tril(np.ones((Tq, Tk), bool))
    out = F.scaled_dot_product_attention(Tensor(q, dtype="float64"), Tensor(k, dtype="float64"),
                                         Tensor(v, dtype="float64"), attn_mask=keep if mask == "bool" else bias,
                                         is_causal=mask == "causal")
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, keep, bias), rtol=1e-10, atol=1e-12)


def test_attention_broadcast_kv_and_non_contiguous(rng):
    q, k, v = randn(rng, 2, 3, 2, 4), randn(rng, 2, 1, 3, 4), randn(rng, 1, 1, 3, 3)  # shared k, v over heads
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v)
    x = randn(rng, 2, 4, 3)  # q, k, v sliced and transposed from one array
    fn = lambda t: F.scaled_dot_product_attention(t[:, :, :2], t[:, ::-1, 1:], F.transpose(t, 0, 1, 2))  # noqa: E731
    assert gradcheck(fn, x)


def test_attention_float32_causal_blocks_the_future(rng):
    q, k, v = (randn(rng, 2, 2, 5, 4).astype(np.float32) for _ in range(3))
    out = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), is_causal=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), np_attention(q, k, v, np.tril(np.ones((5, 5), bool))), rtol=1e-4,
                               atol=1e-5)
    v2, k2 = v.copy(), k.copy()
    v2[..., 3:, :] += 10.0  # changing future keys and values leaves earlier outputs alone
    k2[..., 3:, :] -= 5.0
    out2 = F.scaled_dot_product_attention(Tensor(q), Tensor(k2), Tensor(v2), is_causal=True)
    np.testing.assert_array_equal(out2.numpy()[..., :3, :], out.numpy()[..., :3, :])
    np.testing.assert_allclose(out.numpy()[..., 0, :], v[..., 0, :], rtol=1e-6)  # query 0 sees only key 0


def test_attention_fully_masked_row_gives_zero_not_nan(rng):
    q, k, v = (Tensor(randn(rng, 3, 3, 2), requires_grad=True) for _ in range(3))
    keep = np.ones((3, 3), bool)
    keep[1] = False  # query 1 may attend to nothing
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    np.testing.assert_array_equal(out.numpy()[:, 1], 0)
    out.sum().backward()
    assert all(np.isfinite(t.grad).all() for t in (q, k, v))
    np.testing.assert_array_equal(q.grad[:, 1], 0)
    m = np.where(keep, 0.0, -np.inf)  # the same as an additive -inf mask
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, attn_mask=m).numpy(), out.numpy())


def test_attention_dropout_with_fixed_seed(rng):
    q, k, v = randn(rng, 2, 3, 2), randn(rng, 2, 4, 2), randn(rng, 2, 4, 3)
    fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=0.3,  # noqa: E731
                                                        rng=np.random.default_rng(5))
    assert gradcheck(fn, q, k, v)
    same = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), dropout_p=0.0).numpy()
    dropped = fn(Tensor(q), Tensor(k), Tensor(v)).numpy()
    assert not np.allclose(same, dropped)


@pytest.mark.parametrize("case", ["plain", "causal-dropout", "broadcast-kv", "mask-grad", "mask-batch-axes"])
def test_attention_is_the_same_on_two_threads(case):
    """The batch cut between two threads (each its rows of P, out and the gradients) against the plain
    computation on one: values and every gradient, float64."""
    rng = np.random.default_rng(3)
    B, H, Tq, Tk, d = 5, 2, 4, 6, 3
    shapes = {"q": (B, H, Tq, d), "k": (B, H, Tk, d), "v": (B, H, Tk, d)}
    mask = None
    kwargs = {}
    if case == "causal-dropout":
        Tk = Tq
        shapes.update(k=(B, H, Tq, d), v=(B, H, Tq, d))
    if case == "broadcast-kv":
        shapes.update(k=(1, H, Tk, d), v=(B, 1, Tk, d))
    if case == "mask-grad":
        mask = rng.standard_normal((B, 1, Tq, Tk))
    if case == "mask-batch-axes":   # the mask's first axis is the scores' alone: q, k, v are used whole
        shapes = {"q": (H, Tq, d), "k": (H, Tk, d), "v": (H, Tk, d)}
        mask = rng.random((B, 1, Tq, Tk)) < 0.7
    arrays = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    g = None
    results = []
    for n in (1, 2):
        with _threads.threads(n, min_bytes=1):
            t = {name: Tensor(a, dtype="float64", requires_grad=True) for name, a in arrays.items()}
            m = Tensor(mask, dtype="float64", requires_grad=True) if mask is not None and mask.dtype != bool else mask
            if case == "causal-dropout":
                kwargs = {"is_causal": True, "dropout_p": 0.25, "rng": np.random.default_rng(7)}
            out = F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=m, **kwargs)
            g = rng.standard_normal(out.shape) if g is None else g
            out.backward(g)
            grads = [np.asarray(t[name].grad) for name in ("q", "k", "v")]
            if isinstance(m, Tensor):
                grads.append(np.asarray(m.grad))
            results.append([out.numpy(), *grads])
    if case in ("plain", "mask-batch-axes"):
        keep = None if mask is None else mask
        want = np_attention(arrays["q"], arrays["k"], arrays["v"], keep)
        np.testing.assert_allclose(results[0][0], want, rtol=1e-10, atol=1e-12)
    for one, two in zip(*results):
        np.testing.assert_allclose(one, two, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["causal", "mask-grad", "dropout", "broadcast-kv", "mask-batch-axes", "short"])
def test_causal_blocks_are_the_plain_computation(case):
    """A causal attention computed in CAUSAL_BLOCKS runs of queries (each against the keys it can see)
    against one run over every key: values and every gradient, float64, with an additive mask (and its
    gradient, 0 where the blocks skip), dropout, broadcast keys / values, a mask with batch axes of its own,
    and fewer queries than blocks."""
    from autograd.ops import attention
    rng = np.random.default_rng(5)
    B, H, T, d = 3, 2, 3 if case == "short" else 11, 4
    shapes = {"q": (B, H, T, d), "k": (B, H, T, d), "v": (B, H, T, d)}
    mask = None
    if case == "broadcast-kv":
        shapes.update(k=(1, H, T, d), v=(B, 1, T, d))
    if case == "mask-grad":
        mask = rng.standard_normal((B, 1, T, T))
    if case == "mask-batch-axes":
        shapes = {"q": (H, T, d), "k": (H, T, d), "v": (H, T, d)}
        mask = rng.random((B, 1, 1, T)) < 0.8
    arrays = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    g = rng.standard_normal((B, H, T, d))
    results = []
    for blocks in (1, 4):
        old, attention.CAUSAL_BLOCKS = attention.CAUSAL_BLOCKS, blocks
        try:
            t = {name: Tensor(a, dtype="float64", requires_grad=True) for name, a in arrays.items()}
            m = Tensor(mask, dtype="float64", requires_grad=True) if mask is not None and mask.dtype != bool else mask
            kwargs = {"dropout_p": 0.25, "rng": np.random.default_rng(7)} if case == "dropout" else {}
            out = F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=m, is_causal=True, **kwargs)
            out.backward(g)
            grads = [np.asarray(t[name].grad) for name in ("q", "k", "v")]
            if isinstance(m, Tensor):
                grads.append(np.asarray(m.grad))
            results.append([out.numpy(), *grads])
        finally:
            attention.CAUSAL_BLOCKS = old
    if case == "causal":
        keep = np.tril(np.ones((T, T), bool))
        np.testing.assert_allclose(results[1][0], np_attention(arrays["q"], arrays["k"], arrays["v"], keep),
                                   rtol=1e-10, atol=1e-12)
    for one, four in zip(*results):
        np.testing.assert_allclose(four, one, rtol=1e-12, atol=1e-12)


def test_causal_blocks_of_short_and_empty_sequences():
    """The runs cover the queries once; a sequence of one query or none, or keys of another length,
    take one run; queries with no key at all give 0 (and a zero gradient)."""
    from autograd.ops import attention
    for T in (2, 3, 11):
        blocks = attention._query_blocks(T, T, True)
        assert len(blocks) == min(attention.CAUSAL_BLOCKS, T) and blocks[0][0] == 0 and blocks[-1][1:] == (T, T)
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        assert attention._query_blocks(T, T + 1, True) == [(0, T, T + 1)] == attention._query_blocks(T, T + 1, False)
    assert attention._query_blocks(0, 0, True) == [(0, 0, 0)] and attention._query_blocks(1, 1, True) == [(0, 1, 1)]
    empty = Tensor(np.zeros((2, 0, 3)), requires_grad=True)
    out = F.scaled_dot_product_attention(empty, empty, empty, is_causal=True)
    out.sum().backward()
    assert out.shape == (2, 0, 3) and empty.grad.shape == (2, 0, 3)
    q = Tensor(np.ones((2, 4, 3)), requires_grad=True)        # queries with no key: output 0, gradient 0
    out = F.scaled_dot_product_attention(q, empty, empty)
    out.sum().backward()
    assert out.shape == (2, 4, 3) and not out.numpy().any() and not q.grad.any()


def test_attention_errors():
    q = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"scaled_dot_product_attention.*\(2, 3, 4\).*\(2, 5, 3\)"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((2, 5, 3))), Tensor(np.zeros((2, 5, 3))))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((2, 5, 4))), Tensor(np.zeros((2, 6, 4))))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((3, 5, 4))), Tensor(np.zeros((3, 5, 4))))
    with pytest.raises(ShapeError, match="scaled_dot_product_attention.*attn_mask"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((3, 2), bool))
