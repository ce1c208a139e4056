"""Tests for tinygen.nn: registration, state dicts, modes, initialisation, layer shapes, attention."""
import math

import numpy as np
import pytest

import autograd.functional as F
from autograd import Tensor, no_grad
from tinygen import nn


def _x(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3, np.float32))
        self.body = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3))
        self.norm = nn.BatchNorm1d(3)
        self.heads = nn.ModuleList([nn.Linear(3, 2), nn.Linear(3, 1, bias=False)])
        self.register_buffer("offset", np.zeros(4, np.float32))
        self.register_buffer("table", np.arange(5.0), persistent=False)
        self.note = "plain attribute"

    def forward(self, x):
        h = self.norm(self.body(x - self.offset)) * self.scale
        return F.concat([head(h) for head in self.heads], axis=1)


# ---------------------------------------------------------------------- registration and naming
def test_named_parameters_in_registration_order():
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                     "norm.weight", "norm.bias", "heads.0.weight", "heads.0.bias", "heads.1.weight"]


def test_buffers_children_modules_and_plain_attributes():
    net = Net()
    assert [n for n, _ in net.named_buffers()] == ["offset", "table", "norm.running_mean", "norm.running_var"]
    assert isinstance(net.offset, np.ndarray) and net.note == "plain attribute"
    assert [type(c).__name__ for c in net.children()] == ["Sequential", "BatchNorm1d", "ModuleList"]
    assert len(list(net.modules())) == 9  # net, body, 3 in body, norm, heads, 2 in heads
    assert all(isinstance(p, nn.Parameter) and p.requires_grad and p.dtype == np.float32
               for p in net.parameters())


def test_reassignment_keeps_order_and_shared_parameters_count_once():
    net = Net()
    net.body = nn.Sequential(nn.Linear(4, 3))
    assert [n for n, _ in net.named_parameters()][:3] == ["scale", "body.0.weight", "body.0.bias"]
    shared = nn.Linear(3, 3)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(seq.parameters()) == 2 and seq.num_parameters() == 12
    net.bias_free = None
    with pytest.raises(TypeError):
        net.scale = np.ones(3)


def test_module_without_super_init_fails_clearly():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_parameter_is_float32_tensor():
    p = nn.Parameter(np.arange(3))
    assert isinstance(p, Tensor) and p.dtype == np.float32 and p.requires_grad
    assert nn.Parameter(np.zeros(2, np.float64)).dtype == np.float32
    assert "Parameter containing" in repr(p)


def test_repr_shows_the_tree():
    text = repr(Net())
    assert "(body): Sequential(" in text and "(0): Linear(in_features=4, out_features=3, bias=True)" in text
    assert "(1): Linear(in_features=3, out_features=1, bias=False)" in text


def test_zero_grad_num_parameters_and_to():
    net = Net()
    net(_x(5, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert net.num_parameters() == 3 + (12 + 3) + (9 + 3) + 6 + (6 + 2) + 3
    assert net.to("cpu") is net
    with pytest.raises(ValueError):
        net.to("tpu")


# ---------------------------------------------------------------------- state dicts
def test_state_dict_round_trip():
    nn.manual_seed(1)
    a = Net()
    a(_x(6, 4))  # moves the running statistics
    nn.manual_seed(2)
    b = Net()
    sd = a.state_dict()
    assert list(sd) == ["scale", "offset", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                        "heads.0.weight", "heads.0.bias", "heads.1.weight"]  # "table" is not persistent
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["scale"][:] = 7  # a copy: the model is untouched
    assert np.all(a.scale.data == 1)
    sd["scale"][:] = 1
    missing, unexpected = b.load_state_dict(sd)
    assert missing == [] and unexpected == []
    a.eval(), b.eval()
    x = _x(3, 4, seed=5)
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_load_state_dict_refuses_and_names_everything():
    net = Net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    sd = Net().state_dict()
    del sd["body.0.bias"]
    del sd["norm.running_var"]
    sd["extra.weight"] = np.zeros((2, 2), np.float32)
    sd["heads.0.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    for text in ["missing", "body.0.bias (3,)", "norm.running_var (3,)", "unexpected", "extra.weight (2, 2)",
                 "mis-shaped", "heads.0.weight (5, 3) in the state dict, (2, 3) in the model"]:
        assert text in msg
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    for k, v in net.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict_still_refuses_shapes():
    net = Net()
    sd = {"scale": np.full(3, 2, np.float32), "unknown": np.zeros(1)}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert unexpected == ["unknown"] and "body.0.weight" in missing
    assert np.all(net.scale.data == 2)
    with pytest.raises(nn.StateDictError, match="scale"):
        net.load_state_dict({"scale": np.zeros(4)}, strict=False)


def test_load_state_dict_takes_scalars_for_0d_entries():
    m = nn.Module()
    m.t = nn.Parameter(np.array(1.0, np.float32))
    m.load_state_dict({"t": 2.5})  # checkpoints may store 0-d arrays as plain numbers
    assert m.t.data.shape == () and float(m.t.data) == 2.5 and m.t.dtype == np.float32


# ---------------------------------------------------------------------- train / eval
def test_train_eval_toggles_dropout():
    net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
    x = _x(64, 8)
    assert net.training and all(m.training for m in net.modules())
    y = net(x).data
    assert (y == 0).mean() > 0.3
    net.eval()
    assert not any(m.training for m in net.modules())
    np.testing.assert_allclose(net(x).data, net[0](x).data)
    net.train()
    assert net[1].training


def test_train_eval_toggles_batchnorm():
    bn = nn.BatchNorm2d(3)
    x = Tensor(np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 4, 4)).astype(np.float32))
    y = bn(x).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    mean = x.data.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-5)
    var_unbiased = x.data.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var_unbiased, rtol=1e-5)
    bn.eval()
    stats = bn.running_mean.copy()
    y_eval = bn(x).data
    np.testing.assert_array_equal(bn.running_mean, stats)  # not updated in eval mode
    expected = (x.data - stats[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="4-d"):
        bn(_x(2, 3))


# ---------------------------------------------------------------------- initialisation
def _check_uniform_bound(a, bound):
    a = np.abs(a)
    assert a.max() <= bound * (1 + 1e-6) and a.max() > 0.9 * bound


def test_default_init_bounds_follow_fan_in():
    lin = nn.Linear(50, 400)
    _check_uniform_bound(lin.weight.data, 1 / math.sqrt(50))
    _check_uniform_bound(lin.bias.data, 1 / math.sqrt(50))
    conv = nn.Conv2d(8, 64, 3, groups=2)  # fan_in = 8/2 * 3 * 3 = 36
    assert conv.weight.shape == (64, 4, 3, 3)
    _check_uniform_bound(conv.weight.data, 1 / 6)
    _check_uniform_bound(conv.bias.data, 1 / 6)
    convt = nn.ConvTranspose2d(64, 8, 3, groups=2)  # weight (64, 4, 3, 3): fan_in = 4 * 3 * 3 = 36
    assert convt.weight.shape == (64, 4, 3, 3)
    _check_uniform_bound(convt.weight.data, 1 / 6)
    emb = nn.Embedding(100, 50)
    assert abs(emb.weight.data.std() - 1) < 0.05 and abs(emb.weight.data.mean()) < 0.05
    ln = nn.LayerNorm(5)
    assert np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)


def test_init_helpers_work_in_place():
    w = nn.Parameter(np.zeros((30, 20), np.float32))
    data = w.data
    nn.init.xavier_uniform_(w)
    assert w.data is data and w.dtype == np.float32
    _check_uniform_bound(w.data, math.sqrt(6 / 50))
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    _check_uniform_bound(w.data, 1 / math.sqrt(20))
    nn.init.normal_(w, 0.0, 0.02, rng=np.random.default_rng(0))
    assert abs(w.data.std() - 0.02) < 0.002
    nn.init.zeros_(w)
    assert np.all(w.data == 0)
    nn.init.ones_(w)
    assert np.all(w.data == 1)
    nn.init.uniform_(w, 2, 3)
    assert w.data.min() >= 2 and w.data.max() < 3


def test_manual_seed_makes_models_and_dropout_reproducible():
    nn.manual_seed(3)
    a = Net()
    nn.manual_seed(3)
    b = Net()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    nn.manual_seed(4)
    assert not np.array_equal(Net().body[0].weight.data, a.body[0].weight.data)
    drop, x = nn.Dropout(0.5), Tensor(np.ones((4, 10), np.float32))
    nn.manual_seed(5)
    m1 = drop(x).data
    state = nn.get_rng_state()
    m2 = drop(x).data
    nn.set_rng_state(state)
    np.testing.assert_array_equal(drop(x).data, m2)
    nn.manual_seed(5)
    np.testing.assert_array_equal(drop(x).data, m1)


# ---------------------------------------------------------------------- layer shapes
def test_layer_output_shapes():
    assert nn.Linear(5, 7)(_x(2, 3, 5)).shape == (2, 3, 7)
    x = _x(2, 3, 8, 8)
    assert nn.Conv2d(3, 4, 3, padding=1)(x).shape == (2, 4, 8, 8)
    assert nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3)(x).shape == (2, 6, 4, 4)
    assert nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)(x).shape == (2, 4, 16, 16)
    assert nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)(x).shape == (2, 4, 16, 16)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.AvgPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.Upsample(scale_factor=2)(x).shape == (2, 3, 16, 16)
    assert nn.Flatten()(x).shape == (2, 192)
    assert nn.GroupNorm(1, 3)(x).shape == x.shape and nn.LayerNorm((8, 8))(x).shape == x.shape
    assert nn.Embedding(10, 4)(np.array([[1, 2, 3]])).shape == (1, 3, 4)
    for act in [nn.ReLU(), nn.LeakyReLU(0.2), nn.GELU(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Identity()]:
        assert act(x).shape == x.shape
    np.testing.assert_allclose(nn.LeakyReLU(0.2)(Tensor(np.array([-1.0, 2.0]))).data, [-0.2, 2.0])
    mha = nn.MultiheadAttention(16, 4, context_dim=6)
    assert mha(_x(2, 5, 16), context=_x(2, 7, 6)).shape == (2, 5, 16)
    assert nn.TimestepEmbedding(8, 32)(np.array([1, 2, 3])).shape == (3, 32)


def test_conv2d_dilation_shape():
    y = nn.Conv2d(3, 4, (3, 5), dilation=2, bias=False)(_x(1, 3, 9, 9))
    assert y.shape == (1, 4, 5, 1)


# ---------------------------------------------------------------------- attention
def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_attention(mha, x, context=None, causal=False):
    """Multi-head attention written out in NumPy with mha's weights."""
    H = mha.num_heads
    ctx = x if context is None else context
    lin = lambda m, a: a @ m.weight.data.T + m.bias.data
    q, k, v = lin(mha.q_proj, x), lin(mha.k_proj, ctx), lin(mha.v_proj, ctx)
    B, T, D = q.shape
    S, dh = k.shape[1], D // H
    split = lambda a, n: a.reshape(B, n, H, dh).transpose(0, 2, 1, 3)
    q, k, v = split(q, T), split(k, S), split(v, S)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    if causal:
        scores = np.where(np.tril(np.ones((T, S), bool)), scores, -np.inf)
    out = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    return lin(mha.out_proj, out)


def test_multihead_attention_matches_numpy():
    mha = nn.MultiheadAttention(12, 3)
    x, c = _x(2, 5, 12), _x(2, 4, 12, seed=1)
    np.testing.assert_allclose(mha(x).data, _numpy_attention(mha, x.data), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mha(x, is_causal=True).data, _numpy_attention(mha, x.data, causal=True),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mha(x, context=c).data, _numpy_attention(mha, x.data, c.data),
                               rtol=1e-4, atol=1e-5)
    mask = np.tril(np.ones((5, 5), bool))  # a boolean mask (True = may attend) equals is_causal
    np.testing.assert_allclose(mha(x, attn_mask=mask).data, mha(x, is_causal=True).data, rtol=1e-5, atol=1e-6)


def test_causal_block_ignores_future_tokens():
    block = nn.TransformerBlock(16, 4, causal=True)
    x = _x(2, 6, 16)
    changed = x.data.copy()
    changed[:, 4:] = np.random.default_rng(9).standard_normal((2, 2, 16))
    with no_grad():
        y1, y2 = block(x).data, block(Tensor(changed)).data
    np.testing.assert_allclose(y1[:, :4], y2[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y1[:, 4:], y2[:, 4:])
    full = nn.TransformerBlock(16, 4)  # without causal masking the past sees the future
    with no_grad():
        assert not np.allclose(full(x).data[:, :4], full(Tensor(changed)).data[:, :4])


def test_transformer_block_gradient_reaches_every_parameter():
    block = nn.TransformerBlock(16, 4, mlp_ratio=2, dropout=0.1, cross_dim=8)
    names = [n for n, _ in block.named_parameters()]
    assert names[:2] == ["ln1.weight", "ln1.bias"] and "cross_attn.k_proj.weight" in names
    assert block.cross_attn.k_proj.weight.shape == (16, 8) and block.mlp[0].weight.shape == (32, 16)
    x = Tensor(_x(2, 5, 16).data, requires_grad=True)
    y = block(x, context=_x(2, 3, 8, seed=2))
    assert y.shape == (2, 5, 16)
    (y * _x(2, 5, 16, seed=3)).sum().backward()
    for n, p in block.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and np.abs(p.grad).sum() > 0, n
    assert x.grad is not None
    with pytest.raises(ValueError, match="context"):
        block(x)


# ---------------------------------------------------------------------- timestep embedding
def test_timestep_embedding_values():
    emb = nn.timestep_embedding(np.array([0, 1, 500]), 8)
    assert emb.shape == (3, 8) and emb.dtype == np.float32 and not emb.requires_grad
    np.testing.assert_allclose(emb.data[0], [1, 1, 1, 1, 0, 0, 0, 0])
    freqs = np.exp(-np.log(10000) * np.arange(4) / 4)  # 1, 0.1, 0.01, 0.001
    np.testing.assert_allclose(freqs, [1, 0.1, 0.01, 0.001], rtol=1e-12)
    for row, t in zip(emb.data, [0, 1, 500]):
        np.testing.assert_allclose(row, np.concatenate([np.cos(t * freqs), np.sin(t * freqs)]), atol=1e-6)
    np.testing.assert_allclose(emb.data[1, [0, 4]], [math.cos(1), math.sin(1)], rtol=1e-6)
    odd = nn.timestep_embedding(Tensor(np.array([3.5])), 5, max_period=100)
    assert odd.shape == (1, 5) and odd.data[0, 4] == 0
    np.testing.assert_allclose(odd.data[0, :2], np.cos(3.5 * np.exp(-np.log(100) * np.arange(2) / 2)), rtol=1e-6)


# ---------------------------------------------------------------------- devices


class DeviceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.2)
        self.time = nn.TimestepEmbedding(8, 4)
        self.block = nn.TransformerBlock(4, 2)

    def forward(self, x, t):
        h = self.drop(self.norm(self.conv(x)))                          # (B, 4, 3, 3)
        h = h + self.time(t).reshape(x.shape[0], 4, 1, 1)
        return self.block(h.reshape(x.shape[0], 4, 9).transpose(0, 2, 1))  # (B, 9, 4)


def test_to_device_moves_parameters_buffers_and_grads(standin_device, standin_array):
    Tagged = standin_array
    net = DeviceNet()
    x = _x(2, 1, 3, 3)
    net(x, np.array([1, 2])).sum().backward()  # gradients on the CPU, moved along with the parameters
    assert net.to(standin_device) is net
    assert all(type(p.data) is Tagged and type(p.grad) is Tagged for p in net.parameters())
    assert all(type(b) is Tagged for b in net.buffers())
    xs = Tensor._make(x.data.view(Tagged), False, None)
    y = net(xs, np.array([3, 4]))  # integer timesteps given as a NumPy array are moved by TimestepEmbedding
    assert type(y.data) is Tagged and y.device == standin_device
    net.zero_grad()
    y.sum().backward()
    assert all(type(p.grad) is Tagged for p in net.parameters())
    sd = net.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    net.load_state_dict(sd)
    assert all(type(p.data) is Tagged for p in net.parameters())
    net.eval()
    assert type(net(xs, np.array([0, 1])).data) is Tagged
    net.to("cpu")
    assert all(type(p.data) is np.ndarray for p in net.parameters()) and type(net.norm.running_var) is np.ndarray
