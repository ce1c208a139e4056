"""Views and the version counter: a view (x[0:2], x.reshape(...), x.T, x.expand(...)) shares its base's
memory, so it shares its base's version counter, and an in-place change through the base or any view
after the forward pass is refused at backward instead of giving a plausible wrong gradient."""
import numpy as np
import pytest

import autograd.functional as F
from autograd import Tensor, gradcheck, no_grad, zeros

STALE = r"modified by an in-place operation"


def _leaf(values, requires_grad):
    return Tensor(np.asarray(values, dtype=np.float32), requires_grad=requires_grad)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["constant", "leaf"])
def test_base_changed_after_a_slice_was_used_is_refused(requires_grad):
    x, w = _leaf([1.0, 2.0, 3.0], requires_grad), _leaf([1.0, 1.0], True)
    y = x[0:2]
    z = (y * w).sum()
    x.add_(10)           # y sees the change: w.grad would be [11, 12], not y's forward values [1, 2]
    with pytest.raises(RuntimeError, match=r"backward through mul: input 0 \(shape \(2,\)\).*" + STALE):
        z.backward()
    assert w.grad is None


def test_base_changed_after_a_slice_of_a_non_leaf_was_used_is_refused():
    a, w = _leaf([1.0, 2.0, 3.0], True), _leaf([1.0, 1.0], True)
    x = a * 1.0          # a non-leaf
    y = x[0:2]
    z = (y * w).sum()
    with no_grad():
        x.add_(10)
    with pytest.raises(RuntimeError, match=STALE):
        z.backward()


@pytest.mark.parametrize("make_view", [
    lambda x: x.reshape(2, 2),
    lambda x: x.reshape(2, 2).T,
    lambda x: F.transpose(x.reshape(2, 2), 1, 0),
    lambda x: x.reshape(1, 4).expand(3, 4),
    lambda x: F.unsqueeze(x, 0),
    lambda x: x[::2],
    lambda x: x[None, 1:],
], ids=["reshape", "T", "transpose", "expand", "unsqueeze", "strided-slice", "slice-and-new-axis"])
def test_every_kind_of_view_shares_the_counter(make_view):
    x = _leaf([1.0, 2.0, 3.0, 4.0], False)
    v = make_view(x)
    assert np.shares_memory(v.data, x.data) and v._version_counter is x._version_counter
    w = Tensor(np.ones(v.shape, np.float32), requires_grad=True)
    z = (v * w).sum()
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match=STALE):
        z.backward()


def test_in_place_change_of_a_view_reaches_the_base():
    x, w = _leaf([1.0, 2.0, 3.0], False), _leaf([1.0, 1.0, 1.0], True)
    z = (x * w).sum()    # mul saved x
    v = x[1:]
    v.add_(5)            # changes x[1:] as well
    assert x.data.tolist() == [1.0, 7.0, 8.0] and x._version == 1
    with pytest.raises(RuntimeError, match=STALE):
        z.backward()


def test_in_place_change_of_a_sibling_view_is_seen():
    x, w = _leaf([1.0, 2.0, 3.0, 4.0], False), _leaf([1.0, 1.0], True)
    first, second = F.split(x, 2)
    z = (first * w).sum()
    second.zero_()       # a sibling: PyTorch counts it too (one counter for all views of a base)
    with pytest.raises(RuntimeError, match=STALE):
        z.backward()


def test_view_made_under_no_grad_shares_the_counter():
    x, w = _leaf([1.0, 2.0, 3.0], True), _leaf([1.0, 1.0], True)
    with no_grad():
        v = x[0:2]
    assert v._version_counter is x._version_counter and not v.requires_grad
    z = (v * w).sum()
    x.sub_(1.0)
    with pytest.raises(RuntimeError, match=STALE):
        z.backward()
    # and the other way round: a change through the no_grad view is seen by a graph that saved x
    z = (x * x).sum()
    with no_grad():
        v.mul_(3.0)
    with pytest.raises(RuntimeError, match=r"backward through mul: input 0 \(shape \(3,\)\).*" + STALE):
        z.backward()


def test_update_of_a_parameter_whose_view_was_used_is_refused():
    """What an optimiser step does (p.sub_(lr * g)); tests/test_optim.py runs the real optimisers."""
    p = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    x = Tensor(np.ones((4, 3), np.float32))
    loss = ((x @ p.T) ** 2).sum()     # matmul saved p.T, a view of p
    loss.backward(retain_graph=True)
    p.sub_(0.1 * p.grad)              # p.T's saved array changed under it
    with pytest.raises(RuntimeError, match=r"backward through matmul.*" + STALE):
        loss.backward()


def test_unchanged_views_give_the_right_gradient():
    x = Tensor(np.arange(6, dtype=np.float64), requires_grad=True)
    gradcheck(lambda a: (a[1:4] * a.reshape(2, 3).T.reshape(6)[0:3]).sum(), x)


def test_copies_do_not_share_the_counter():
    x = _leaf([1.0, 2.0, 3.0, 4.0], False)
    assert (x * 2)._version_counter is not x._version_counter
    assert x[np.array([0, 1])]._version_counter is not x._version_counter   # integer-array indexing copies
    w = _leaf([1.0, 1.0], True)
    z = (x[np.array([0, 1])] * w).sum()
    x.add_(1.0)          # the copy mul saved is unchanged: the gradient is right
    z.backward()
    assert w.grad.tolist() == [1.0, 2.0]


def test_in_place_on_a_computed_tensor_that_requires_grad_is_refused():
    x = _leaf([1.0, 2.0], True)
    y = x * 1.0
    with pytest.raises(RuntimeError, match=r"mul_: in-place change of a tensor of shape \(2,\) computed by mul "
                                           r"that requires grad"):
        y.mul_(3.0)      # not recorded: y.sum().backward() would give x.grad = 1 instead of 3
    v = x[0:1]           # a view of a leaf that requires grad, computed by getitem
    with pytest.raises(RuntimeError, match=r"add_: in-place change .* computed by getitem"):
        v.add_(1.0)
    with pytest.raises(RuntimeError, match=r"zero_: in-place change"):
        y.zero_()
    with no_grad():      # under no_grad the change is the user's explicit choice
        y.mul_(3.0)
    assert y.data.tolist() == [3.0, 6.0]


def test_requires_grad_only_on_floating_tensors():
    i = Tensor([1, 2, 3])
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients, got dtype int64"):
        i.requires_grad_(True)
    with pytest.raises(TypeError, match="only floating-point"):
        i.requires_grad = True
    with pytest.raises(TypeError, match="only floating-point"):
        zeros(3, dtype="int64", requires_grad=True)
    with pytest.raises(TypeError, match="only floating-point"):
        Tensor([True, False]).requires_grad_()
    i.requires_grad_(False)   # turning it off is always fine
    assert not i.requires_grad


def test_integer_outputs_do_not_require_grad():
    x = _leaf([1.5, 2.5], True)
    k = x.astype("int64")         # a cast to integers is a constant, as in PyTorch
    assert k.dtype == np.int64 and not k.requires_grad and k.is_leaf
    y = (x * 2).sum()
    y.backward()
    assert x.grad.dtype == np.float32


def test_a_tensor_built_on_another_without_a_copy_shares_the_counter():
    x, w = _leaf([1.0, 2.0], False), _leaf([1.0, 1.0], True)
    y = Tensor(x)                      # same dtype: no copy, the same memory
    assert np.shares_memory(y.data, x.data) and y._version_counter is x._version_counter
    z = (y * w).sum()
    x.add_(1.0)
    with pytest.raises(RuntimeError, match=STALE):
        z.backward()
    assert Tensor(x, dtype="float64")._version_counter is not x._version_counter   # a converted copy
