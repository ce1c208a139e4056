"""The Tensor and the backward pass: graph walking, accumulation, broadcasting, freeing, errors."""
import numpy as np
import pytest

import autograd.functional as F
from autograd import ShapeError, Tensor, enable_grad, no_grad, ones, randn, zeros


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
