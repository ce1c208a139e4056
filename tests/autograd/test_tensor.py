"""The Tensor and the backward pass: graph walking, accumulation, broadcasting, freeing, errors."""
import numpy as np
import pytest

import autograd.functional as F
from autograd import ShapeError, Tensor, enable_grad, no_grad, ones, randn, zeros
from tinygen import optim


def test_float32_by_default_and_ints_kept():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float32          # float64 NumPy data becomes float32
    assert Tensor(np.zeros(3), dtype="float64").dtype == np.float64
    assert Tensor([1, 2]).dtype == np.int64
    assert zeros(2, 3).shape == (2, 3) and ones((2,)).dtype == np.float32


def test_scalar_takes_tensor_dtype():
    x = Tensor(np.ones(2), dtype="float64")
    assert (x * 2.5).dtype == np.float64
    assert (Tensor([1.0]) + 1e-3).dtype == np.float32


def test_mixing_float32_and_float64_is_an_error():
    a, b = Tensor([1.0]), Tensor([1.0], dtype="float64")
    with pytest.raises(TypeError, match="mixing float32 and float64"):
        a + b


def test_gradient_accumulates_for_reused_tensor():
    x = Tensor([3.0], requires_grad=True)
    y = x * x + x            # dy/dx = 2x + 1 = 7
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [7.0])
    (x * 2).sum().backward()  # .grad accumulates across backward calls until zeroed
    np.testing.assert_allclose(x.grad, [9.0])


def test_unbroadcast_to_operand_shapes():
    a = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones((4,)), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_allclose(a.grad, 4.0)
    np.testing.assert_allclose(b.grad, 3.0)


def test_shared_output_gradient_is_not_aliased():
    x, y = Tensor([1.0], requires_grad=True), Tensor([2.0], requires_grad=True)
    (x + y).sum().backward()
    x.grad *= 10  # modifying one leaf's gradient in place must not touch the other's
    np.testing.assert_allclose(y.grad, [1.0])


def test_long_chain_has_no_recursion_limit():
    x = Tensor(np.ones(3), requires_grad=True)
    z = x
    for _ in range(10_000):
        z = z * 1.0001
    z.sum().backward()
    np.testing.assert_allclose(x.grad, 1.0001 ** 10_000, rtol=1e-3)


def test_diamond_graph_order():
    x = Tensor([2.0], requires_grad=True)
    a = x * 3
    b = a * a          # uses a twice
    c = a + b          # and a again: dc/dx = 3 + 2 * a * 3 = 3 + 36
    c.sum().backward()
    np.testing.assert_allclose(x.grad, [39.0])


def test_saved_arrays_freed_and_second_backward_explains():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()  # allowed with retain_graph on the first call
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data + 2 * x.data)


def test_no_grad_and_detach():
    x = Tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2
        with enable_grad():
            w = x * 3
    assert not y.requires_grad and y.is_leaf
    assert w.requires_grad
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf


def test_backward_on_non_scalar_needs_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"non-scalar tensor of shape \(2, 3\).*y.sum\(\).backward\(\)"):
        (x * 2).backward()
    (x * 2).backward(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_allclose(x.grad, 2.0)
    with pytest.raises(ShapeError):
        (x * 2).backward(np.ones(3))


def test_backward_without_grad_requirement():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


def test_shape_errors_name_op_and_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"add: shapes \(2, 3\) and \(4, 5\)"):
        a + b
    with pytest.raises(ShapeError, match=r"matmul: \(2, 3\) @ \(4, 5\)"):
        a @ b
    with pytest.raises(ShapeError, match="reshape"):
        a.reshape(7)
    with pytest.raises(ShapeError, match="concat"):
        F.concat([a, b], axis=0)


def test_cuda_without_cupy_or_gpu_is_a_clear_error():
    from autograd import backend
    if backend.cupy is not None:
        try:
            backend.cupy.cuda.runtime.getDeviceCount()
            pytest.skip("a GPU is present: the error path cannot be exercised here")
        except Exception:
            pass
    with pytest.raises(RuntimeError, match="cuda"):
        Tensor([1.0]).to("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        Tensor([1.0]).to("tpu")


def test_ops_on_two_devices_are_refused():
    from autograd import backend

    class Other(np.ndarray):
        pass

    backend.register_backend(Other, np, "fake-gpu")
    try:
        a = Tensor([1.0])
        b = Tensor._make(np.ones(1, dtype=np.float32).view(Other), False, None)
        assert b.device == "fake-gpu"
        with pytest.raises(RuntimeError, match="different devices.*cpu.*fake-gpu"):
            a + b
    finally:
        backend.unregister_backend(Other)


def test_comparisons_and_methods():
    x = Tensor([[1.0, -2.0], [3.0, 0.5]])
    assert (x > 0).dtype == bool and not (x > 0).requires_grad
    np.testing.assert_allclose(x.T.numpy(), x.numpy().T)
    np.testing.assert_array_equal(x.argmax(axis=1).numpy(), [0, 0])
    assert x.sum().item() == pytest.approx(2.5)
    np.testing.assert_allclose(randn(2, 2, rng=np.random.default_rng(1)).numpy(),
                               randn(2, 2, rng=np.random.default_rng(1)).numpy())
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))


# ---------------------------------------------------------------------- the engine's silent wrong answers
def _saved_input_changed():
    w, x = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    y = (w * x).sum()
    w.mul_(2.0)
    y.backward()


def _saved_output_changed():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = F.exp(x)
    z = y.sum()
    y.detach().zero_()       # a detached view shares the version counter
    z.backward()


def _optimizer_step_between_forward_and_backward():
    w = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    loss = (F.matmul(Tensor(np.ones((1, 2), np.float32)), w) ** 2).sum()
    loss.backward(retain_graph=True)
    opt.step()               # w changes in place: the graph of `loss` is stale
    loss.backward()


A = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
ENGINE = [
    ("sum-axis-out-of-range", lambda: A.sum(axis=5), ShapeError, r"sum: axis 5 is out of range for a 2-d tensor \(valid: -2..1\)"),
    ("sum-axis-repeated", lambda: A.sum(axis=(0, 0)), ShapeError, r"sum: axis \(0, 0\) names an axis twice"),
    ("sum-axis-float", lambda: A.sum(axis=1.0), TypeError, r"sum: axis must be an integer, got 1.0"),
    ("mean-axis-negative", lambda: A.mean(axis=-3), ShapeError, r"mean: axis -3 is out of range"),
    ("max-axis", lambda: A.max(axis=2), ShapeError, r"max: axis 2"),
    ("min-axis", lambda: A.min(axis=-5), ShapeError, r"min: axis -5"),
    ("var-axis", lambda: A.var(axis=3), ShapeError, r"var: axis 3"),
    ("logsumexp-axis", lambda: F.logsumexp(A, axis=9), ShapeError, r"logsumexp: axis 9"),
    ("transpose-axis", lambda: A.transpose(0, 5), ShapeError, r"transpose: axis 5 is out of range"),
    ("transpose-length", lambda: A.transpose(1, 0, 2), ShapeError, r"transpose: axes \(1, 0, 2\) are not a permutation"),
    ("concat-axis", lambda: F.concat([A, A], axis=2), ShapeError, r"concat: axis 2 is out of range for a 2-d"),
    ("concat-empty", lambda: F.concat([], axis=0), ShapeError, r"concat: needs at least one tensor"),
    ("stack-axis", lambda: F.stack([A, A], axis=4), ShapeError, r"stack: axis 4 is out of range for a 3-d"),
    ("unsqueeze-axis", lambda: F.unsqueeze(A, 7), ShapeError, r"unsqueeze: axis 7"),
    ("squeeze-axis", lambda: F.squeeze(A, 5), ShapeError, r"squeeze: axis 5 is out of range"),
    ("split-axis", lambda: F.split(A, 2, axis=4), ShapeError, r"split: axis 4"),
    ("softmax-dim", lambda: F.softmax(A, dim=3), ShapeError, r"softmax: axis 3 is out of range"),
    ("truth-value-multi", lambda: bool(A), ValueError, r"truth value of a tensor with 6 elements .* ambiguous: use .any\(\) or .all\(\)"),
    ("truth-value-if", lambda: 1 if A > 2 else 0, ValueError, r"ambiguous"),
    ("truth-value-empty", lambda: bool(Tensor(np.zeros(0, np.float32))), ValueError, r"0 elements"),
    ("float-of-multi", lambda: float(A), TypeError, r"only one-element tensors"),
    ("len-of-0d", lambda: len(Tensor(1.0)), TypeError, r"len\(\) of a 0-d tensor"),
    ("iter-of-0d", lambda: list(Tensor(1.0)), TypeError, r"iteration over a 0-d tensor"),
    ("int-plus-float", lambda: Tensor([1, 2]) + Tensor([0.5, 0.5]), TypeError, r"add: mixing integer \(int64\) and float \(float32\)"),
    ("int-times-python-float", lambda: Tensor([1, 2]) * 0.5, TypeError, r"mul: mixing integer \(int64\) and float \(float32\)"),
    ("where-int-float", lambda: F.where(Tensor([True, False]), Tensor([1, 2]), Tensor([0.5, 0.5])), TypeError, r"where: mixing integer"),
    ("concat-int-float", lambda: F.concat([Tensor([1]), Tensor([0.5])]), TypeError, r"concat: mixing integer"),
    ("float32-float64", lambda: Tensor([1.0]) + Tensor([1.0], dtype="float64"), TypeError, r"add: mixing float32 and float64"),
    ("saved-input-changed-in-place", _saved_input_changed, RuntimeError, r"backward through mul: input 0 \(shape \(2,\)\), which mul saved .* modified by an in-place operation .*version 0 -> 1"),
    ("saved-output-changed-in-place", _saved_output_changed, RuntimeError, r"backward through exp: its output .* modified by an in-place"),
    ("optimizer-step-before-backward", _optimizer_step_between_forward_and_backward, RuntimeError, r"modified by an in-place operation"),
    ("backward-grad-dtype", lambda: (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(Tensor([1.0, 1.0], dtype="float64")),
     TypeError, r"backward: gradient of dtype float64 for a float32 tensor"),
    ("backward-non-scalar", lambda: (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(), RuntimeError, r"non-scalar tensor of shape \(2,\)"),
]


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in ENGINE], ids=[c[0] for c in ENGINE])
def test_engine_refuses_what_numpy_or_pytorch_would(call, error, culprit):
    with pytest.raises(error, match=culprit):
        call()


def test_engine_gives_the_right_answer_where_it_can():
    a = Tensor([1.0, 2.0, 3.0])
    assert (a == Tensor([1.0, 0.0, 3.0])).data.tolist() == [True, False, True]       # elementwise, not identity
    assert (a != 2.0).data.tolist() == [True, False, True]
    assert bool((a > 0).all()) and not bool((a > 2).all()) and bool((a > 2).any())
    assert [float(t) for t in a] == [1.0, 2.0, 3.0] and len(list(A)) == 2 and list(A)[1].shape == (3,)
    assert bool(Tensor([0.5])) and not bool(Tensor(0.0)) and int(Tensor([7])) == 7
    q = Tensor([1, 2]) / Tensor([2, 2])
    assert q.dtype == np.float32 and q.data.tolist() == [0.5, 1.0]                     # int / int: float32
    assert (Tensor([1, 2]) * 3).dtype == np.int64
    assert F.exp(Tensor([0, 1])).dtype == np.float32
    assert F.stack([A, A], axis=-1).shape == (2, 3, 2) and F.unsqueeze(A, -1).shape == (2, 3, 1)
    # an input changed in place that the op did not save is harmless: the gradient stays right
    w, x = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    y = (w + x).sum()
    w.mul_(2.0)
    y.backward()
    assert x.grad.tolist() == [1.0, 1.0] and w.grad.tolist() == [1.0, 1.0] and w._version == 1
