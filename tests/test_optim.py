"""Tests for tinygen.optim: update rules against NumPy, clipping, schedules, EMA, exact resumption."""
import copy
import json
import math

import numpy as np
import pytest

from autograd import Tensor, no_grad
from tinygen import nn, optim

P0 = np.array([[0.5, -1.0, 2.0], [0.1, 0.0, -0.3]], np.float32)
GRADS = [np.random.default_rng(i).standard_normal(P0.shape).astype(np.float32) for i in range(3)]


def _run(make_opt, steps=3):
    """Apply `steps` updates with the fixed gradients GRADS; returns the parameter and optimiser."""
    p = nn.Parameter(P0.copy())
    opt = make_opt([p])
    for g in GRADS[:steps]:
        p.grad = g.copy()
        opt.step()
        assert p.dtype == np.float32
    return p, opt


# ---------------------------------------------------------------------- update rules
@pytest.mark.parametrize("momentum, dampening, wd, nesterov", [
    (0.0, 0.0, 0.0, False), (0.9, 0.0, 0.0, False), (0.9, 0.1, 0.01, False), (0.9, 0.0, 0.05, True)])
def test_sgd_matches_the_rule_written_out(momentum, dampening, wd, nesterov):
    lr = 0.1
    p, _ = _run(lambda ps: optim.SGD(ps, lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd,
                                     nesterov=nesterov))
    w, buf = P0.astype(np.float64), None
    for t, g in enumerate(GRADS):
        d = g + wd * w
        if momentum:
            buf = d.copy() if t == 0 else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    np.testing.assert_allclose(p.data, w, rtol=1e-5, atol=1e-6)


def _adam_reference(lr, b1, b2, eps, wd, decoupled):
    w, m, v = P0.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(GRADS, start=1):
        g = g.astype(np.float64)
        if decoupled:
            w = w - lr * wd * w
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_the_rule_written_out(wd):
    p, opt = _run(lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd))
    np.testing.assert_allclose(p.data, _adam_reference(0.01, 0.8, 0.99, 1e-6, wd, False), rtol=1e-5, atol=1e-7)
    state = opt.state[p]
    assert state["step"] == 3 and state["exp_avg"].dtype == np.float32 and state["exp_avg_sq"].dtype == np.float32


def test_adamw_decouples_weight_decay():
    p, _ = _run(lambda ps: optim.AdamW(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1))
    np.testing.assert_allclose(p.data, _adam_reference(0.01, 0.9, 0.999, 1e-8, 0.1, True), rtol=1e-5, atol=1e-7)
    assert optim.AdamW([nn.Parameter(P0)]).param_groups[0]["weight_decay"] == 1e-2
    coupled, _ = _run(lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1))
    assert not np.allclose(coupled.data, p.data)


def test_params_without_grad_are_skipped_and_groups_have_their_own_lr():
    a, b, c = (nn.Parameter(P0.copy()) for _ in range(3))
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 1.0}], lr=0.1, momentum=0.9)
    a.grad, b.grad = np.ones_like(P0), np.ones_like(P0)
    opt.step()
    np.testing.assert_allclose(a.data, P0 - 0.1)
    np.testing.assert_allclose(b.data, P0 - 1.0)
    np.testing.assert_array_equal(c.data, P0)
    assert c not in opt.state and a in opt.state
    opt.lr = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5] and opt.lr == 0.5
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    with pytest.raises(ValueError):
        optim.SGD([a, a], lr=0.1)


def test_float32_is_kept_with_float32_and_float64_gradients():
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                 lambda ps: optim.Adam(ps, weight_decay=0.1), lambda ps: optim.AdamW(ps)):
        p = nn.Parameter(P0.copy())
        opt = make([p])
        p.grad = GRADS[0].astype(np.float64)
        opt.step()
        assert p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state[p].values() if hasattr(v, "dtype"))


# ---------------------------------------------------------------------- gradient clipping
def test_clip_grad_norm():
    a, b = nn.Parameter(np.zeros(2, np.float32)), nn.Parameter(np.zeros((2, 2), np.float32))
    ga, gb = np.array([3.0, 0.0], np.float32), np.array([[0.0, 4.0], [0.0, 0.0]], np.float32)
    a.grad, b.grad = ga, gb
    total = optim.clip_grad_norm_([a, b], 1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad, [[0.0, 0.8], [0.0, 0.0]], rtol=1e-5)
    assert a.grad.dtype == np.float32
    np.testing.assert_array_equal(ga, [3.0, 0.0])  # the original arrays were not modified
    a.grad = np.array([0.3, 0.4], np.float32)
    kept = a.grad
    c = nn.Parameter(np.zeros(1, np.float32))  # no gradient: ignored
    assert optim.clip_grad_norm_([a, c], 1.0) == pytest.approx(0.5)
    assert a.grad is kept and c.grad is None


# ---------------------------------------------------------------------- schedules
def _lrs(sched, n):
    out = [sched.optimizer.param_groups[0]["lr"]]
    for _ in range(n):
        sched.step()
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


def test_schedule_values():
    p = nn.Parameter(P0.copy())
    lrs = _lrs(optim.LinearWarmup(optim.SGD([p], lr=1.0), warmup_steps=4), 5)
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    lrs = _lrs(optim.CosineSchedule(optim.SGD([p], lr=2.0), total_steps=4, min_lr_ratio=0.1), 5)
    expected = [2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, 4) / 4))) for s in range(6)]
    np.testing.assert_allclose(lrs, expected)
    assert lrs[0] == pytest.approx(2.0) and lrs[2] == pytest.approx(1.1) and lrs[4] == pytest.approx(0.2)
    lrs = _lrs(optim.WarmupCosine(optim.SGD([p], lr=1.0), warmup_steps=2, total_steps=6), 7)
    np.testing.assert_allclose(lrs, [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                     0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0, 0.0], atol=1e-12)


def test_schedule_scales_each_group_and_resumes():
    a, b = nn.Parameter(P0.copy()), nn.Parameter(P0.copy())
    opt = optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched = optim.WarmupCosine(opt, warmup_steps=2, total_steps=10)
    for _ in range(3):
        sched.step()
    assert sched.get_last_lr() == pytest.approx([1.0 * sched.factor(3), 0.1 * sched.factor(3)])
    opt2 = optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched2 = optim.WarmupCosine(opt2, warmup_steps=2, total_steps=10)
    sched2.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    for _ in range(2):
        sched.step(), sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
    custom = optim.LambdaLR(optim.SGD([a], lr=2.0), lambda s: 0.5 ** s)
    assert _lrs(custom, 2) == [2.0, 1.0, 0.5]


# ---------------------------------------------------------------------- EMA
def test_ema_math_buffers_and_swap():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    w0 = net[0].weight.data.copy()
    ema = optim.EMA(net, decay=0.9)
    w1 = w0 + 1.0
    net[0].weight.data[...] = w1
    net[1].running_mean[...] = 5.0
    ema.update()
    w2 = w0 - 2.0
    net[0].weight.data[...] = w2
    ema.update()
    expected = 0.9 * (0.9 * w0 + 0.1 * w1) + 0.1 * w2
    np.testing.assert_allclose(ema.shadow["0.weight"], expected, rtol=1e-6)
    assert ema.shadow["0.weight"].dtype == np.float32 and ema.num_updates == 2
    np.testing.assert_array_equal(ema.buffers["1.running_mean"], [5.0, 5.0])  # copied, not averaged
    net[1].running_mean[...] = 1.0
    with ema.average_parameters(net):
        np.testing.assert_allclose(net[0].weight.data, expected, rtol=1e-6)
        np.testing.assert_array_equal(net[1].running_mean, [5.0, 5.0])
    np.testing.assert_array_equal(net[0].weight.data, w2)  # restored
    np.testing.assert_array_equal(net[1].running_mean, [1.0, 1.0])
    ema.copy_to(net)
    np.testing.assert_allclose(net[0].weight.data, expected, rtol=1e-6)


def test_ema_warmup():
    net = nn.Linear(2, 1, bias=False)
    w0 = net.weight.data.copy()
    ema = optim.EMA(net, decay=0.99, warmup=True)
    # decay_n = min(d, (1 + n) / (10 + n)): 0.1, then 2/11, ... and d once (1 + n) / (10 + n) passes it
    assert ema.current_decay() == pytest.approx(0.1)
    net.weight.data[...] = w0 + 1.0
    ema.update()
    np.testing.assert_allclose(ema.shadow["weight"], 0.1 * w0 + 0.9 * (w0 + 1.0), rtol=1e-6)
    assert ema.current_decay() == pytest.approx(2 / 11) and ema.decay == 0.99  # the recipe's decay is kept
    ema.num_updates = 10_000
    assert ema.current_decay() == 0.99
    plain = optim.EMA(net, decay=0.99)
    assert plain.current_decay() == 0.99 and not plain.warmup
    restored = optim.EMA(net, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.warmup and restored.decay == 0.99 and restored.current_decay() == 0.99
    old = {k: v for k, v in ema.state_dict().items() if k != "warmup"}  # written before the option existed,
    old["decay"] = 0.9                                                   # by a model that set decay_n itself
    again = optim.EMA(net, decay=0.99, warmup=True)
    again.load_state_dict(old)
    assert again.decay == 0.99 and again.current_decay() == 0.99


def test_ema_copies_frozen_parameters_exactly():
    """A frozen stage (requires_grad False) stays bit for bit as it is: averaging p with itself in float32
    moves it by rounding, d p + (1 - d) p != p."""
    net = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2))
    net[0].requires_grad_(False)
    frozen = net[0].weight.data.copy()
    ema = optim.EMA(net, decay=0.999)
    for _ in range(20):
        net[1].weight.data[...] += 1.0
        ema.update()
    np.testing.assert_array_equal(ema.shadow["0.weight"], frozen)
    assert not np.array_equal(ema.shadow["1.weight"], net[1].weight.data)   # the trained part is averaged
    net[0].weight.data[...] += 1.0                   # a frozen parameter changed by hand is followed, not averaged
    ema.update()
    np.testing.assert_array_equal(ema.shadow["0.weight"], net[0].weight.data)


def test_ema_state_dict_round_trip():
    net = nn.Linear(3, 2)
    ema = optim.EMA(net, decay=0.5)
    net.weight.data[...] += 1
    ema.update()
    sd = ema.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd["shadow"].values())
    other = optim.EMA(net, decay=0.999)
    other.load_state_dict(sd)
    assert other.decay == 0.5 and other.num_updates == 1
    np.testing.assert_array_equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="bias"):
        optim.EMA(nn.Linear(3, 2, bias=False)).load_state_dict(sd)


# ---------------------------------------------------------------------- exact resumption
def _json_roundtrip(sd):
    """What a checkpoint does to a state dict: arrays stay arrays, everything else goes through JSON."""
    if isinstance(sd, dict):
        return {str(k): _json_roundtrip(v) for k, v in sd.items()}
    if isinstance(sd, (list, tuple)):
        return [_json_roundtrip(v) for v in sd]
    if isinstance(sd, np.ndarray):
        return sd.copy()
    return json.loads(json.dumps(sd))


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, betas=(0.5, 0.9)),
    lambda ps: optim.AdamW(ps, lr=0.01)])
def test_state_dict_round_trip_gives_identical_steps(make):
    nn.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    opt = make(net.parameters())
    x = Tensor(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))

    def train_step(model, o):
        o.zero_grad()
        (model(x) ** 2).mean().backward()
        o.step()

    for _ in range(2):
        train_step(net, opt)
    model_sd, opt_sd = net.state_dict(), _json_roundtrip(opt.state_dict())
    nn.manual_seed(1)
    net2 = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    opt2 = make(net2.parameters())
    net2.load_state_dict(model_sd)
    opt2.load_state_dict(opt_sd)
    for _ in range(3):
        train_step(net, opt), train_step(net2, opt2)
    for (n, p), (_, q) in zip(net.named_parameters(), net2.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def test_optimizer_state_dict_format_and_refusal():
    p, opt = _run(lambda ps: optim.Adam(ps, lr=0.01))
    sd = opt.state_dict()
    assert set(sd["state"]) == {"0"} and sd["state"]["0"]["step"] == 3
    assert isinstance(sd["state"]["0"]["exp_avg"], np.ndarray)
    json.dumps(sd["param_groups"])  # hyper-parameters are JSON-able
    sd["state"]["0"]["exp_avg"] = np.zeros(4)
    fresh = optim.Adam([nn.Parameter(P0.copy())])
    with pytest.raises(ValueError, match="exp_avg"):
        fresh.load_state_dict(sd)
    with pytest.raises(ValueError, match="parameters"):
        optim.Adam([nn.Parameter(P0.copy()), nn.Parameter(P0.copy())]).load_state_dict(opt.state_dict())


def test_zero_dim_parameters_resume_from_plain_numbers():
    p = nn.Parameter(np.array(1.0, np.float32))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.array(0.5, np.float32)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"]["0"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in sd["state"]["0"].items()}
    q = nn.Parameter(np.array(1.0, np.float32))
    opt2 = optim.Adam([q], lr=0.1)
    opt2.load_state_dict(sd)
    assert opt2.state[q]["exp_avg"].shape == () and opt2.state[q]["exp_avg"].dtype == np.float32


# ---------------------------------------------------------------------- devices


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.AdamW(ps)])
def test_optimizer_and_ema_stay_on_the_parameters_device(standin_device, standin_array, make):
    Tagged = standin_array
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = optim.EMA(net, decay=0.9)  # made on the CPU; follows the model when it moves
    net.to(standin_device)
    opt = make(net.parameters())
    x = Tensor._make(np.ones((4, 3), np.float32).view(Tagged), False, None)
    for _ in range(2):
        opt.zero_grad()
        (net(x) ** 2).mean().backward()
        optim.clip_grad_norm_(net.parameters(), 0.1)
        opt.step()
        ema.update()
    assert all(type(p.data) is Tagged and p.dtype == np.float32 for p in net.parameters())
    assert all(type(v) is Tagged for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))
    assert all(type(s) is Tagged for s in ema.shadow.values())
    with ema.average_parameters(net):
        assert all(type(p.data) is Tagged for p in net.parameters())
    sd, esd = opt.state_dict(), ema.state_dict()
    assert all(type(v) is np.ndarray for s in sd["state"].values() for v in s.values() if hasattr(v, "shape"))
    assert all(type(v) is np.ndarray for v in esd["shadow"].values())
    opt.load_state_dict(sd)
    ema.load_state_dict(esd)
    assert all(type(v) is Tagged for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))


# ---------------------------------------------------------------------- in-place updates and views
def test_optimizer_step_on_a_parameter_whose_view_was_used_is_refused():
    p = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    x = Tensor(np.ones((4, 3), np.float32))
    loss = ((x @ p.T) ** 2).sum()     # matmul saved p.T, a view of p
    loss.backward(retain_graph=True)
    opt.step()                         # p.sub_(...): p.T's saved array changed under it
    with pytest.raises(RuntimeError, match=r"backward through matmul.*modified by an in-place operation"):
        loss.backward()


def test_training_steps_with_views_and_no_grad_updates_still_work():
    """The library's deliberate in-place updates happen between steps, after backward: never refused."""
    p = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    opt = optim.AdamW([p], lr=0.1)
    x = Tensor(np.ones((4, 3), np.float32))
    for _ in range(3):
        opt.zero_grad()
        loss = ((x @ p.T) ** 2).sum() + (p[0] * p[1]).sum() + p.reshape(6).sum()
        loss.backward()
        opt.step()
        with no_grad():
            p.reshape(6)[0:1].mul_(0.5)    # a no_grad update through a view, between steps
        p.data[...] = np.clip(p.data, -5, 5)  # a raw write, as clipping and EMA do
    assert np.isfinite(p.data).all() and p._version == 9
