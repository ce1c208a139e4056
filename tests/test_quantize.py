"""Tests for tinygen.nn.quantize: the VQ-VAE codebook (nearest code, straight-through gradient, loss terms,
EMA updates, k-means initialisation, dead-code restarts, perplexity, state)."""
import numpy as np
import pytest

from autograd import ShapeError, Tensor
from tinygen import nn, optim


def _z(*shape, seed=0, scale=1.0):
    z = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * np.float32(scale)
    return Tensor(z, requires_grad=True)


def _vq(K=8, D=4, **kw):
    kw.setdefault("kmeans_init", False)
    kw.setdefault("restart_dead", False)
    nn.manual_seed(0)
    return nn.VectorQuantizer(K, D, **kw)


def _set_codebook(vq, codes):
    vq._codebook_array()[...] = np.asarray(codes, np.float32)
    if vq.ema:
        vq.ema_count[...] = 1
        vq.ema_sum[...] = np.asarray(codes, np.float32)


def _flat(z):  # (B, D, H, W) -> (B H W, D)
    return np.moveaxis(z, 1, -1).reshape(-1, z.shape[1])


# ---------------------------------------------------------------------- nearest code
def test_nearest_code_matches_brute_force():
    vq = _vq(K=16, D=3)
    _set_codebook(vq, np.random.default_rng(1).standard_normal((16, 3)))
    z = _z(2, 3, 4, 5, seed=2)
    q = vq(z)
    assert q.indices.shape == (2, 4, 5) and q.indices.dtype == np.int64
    e = vq.codebook.data.astype(np.float64)
    brute = ((_flat(z.data)[:, None, :].astype(np.float64) - e[None]) ** 2).sum(-1).argmin(1)   # (N,)
    np.testing.assert_array_equal(q.indices.reshape(-1), brute)
    np.testing.assert_array_equal(vq.encode(z), q.indices)
    # z_q holds the chosen codes, channel-first like z
    np.testing.assert_allclose(_flat(q.z_q.data), e[brute], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(vq.decode_indices(q.indices).data, np.moveaxis(e[q.indices], -1, 1).astype(np.float32))
    assert vq.decode_indices(q.indices[:, 0, 0]).shape == (2, 3)    # (B,) indices -> (B, D)


def test_straight_through_gradient_copies_dl_dzq_to_z():
    vq = _vq(K=8, D=4)
    _set_codebook(vq, np.random.default_rng(1).standard_normal((8, 4)))
    z = _z(3, 4, 2, 2)
    q = vq(z)
    w = np.random.default_rng(5).standard_normal(q.z_q.shape).astype(np.float32)   # dL/dz_q
    (q.z_q * Tensor(w)).sum().backward()
    np.testing.assert_array_equal(z.grad, w)          # dL/dz = dL/dz_q, exactly
    assert vq.codebook.grad is None                    # z_q sends nothing to the codebook


def test_loss_values_and_where_their_gradients_go():
    vq = _vq(K=8, D=4, beta=0.25)
    _set_codebook(vq, np.random.default_rng(1).standard_normal((8, 4)))
    z = _z(3, 4, 2, 2)
    q = vq(z)
    e = np.moveaxis(vq.codebook.data[q.indices], -1, 1)                   # (B, D, H, W): e_k per position
    mse = float(((z.data - e) ** 2).mean())
    np.testing.assert_allclose(float(q.codebook_loss.data), mse, rtol=1e-5)
    np.testing.assert_allclose(float(q.commitment_loss.data), mse, rtol=1e-5)
    np.testing.assert_allclose(float(q.loss.data), 1.25 * mse, rtol=1e-5)

    n = z.size
    q.codebook_loss.backward()                        # ||sg(z) - e||^2: the codebook only
    assert z.grad is None
    expected = np.zeros((8, 4), np.float32)
    np.add.at(expected, q.indices.reshape(-1), _flat(2 * (e - z.data) / n))
    np.testing.assert_allclose(vq.codebook.grad, expected, rtol=1e-5, atol=1e-7)

    vq.zero_grad()
    q = vq(z)
    q.commitment_loss.backward()                      # ||z - sg(e)||^2: the encoder output only
    assert vq.codebook.grad is None
    np.testing.assert_allclose(z.grad, 2 * (z.data - e) / n, rtol=1e-5, atol=1e-7)


def test_gradient_trained_codebook_moves_towards_the_data():
    vq = _vq(K=4, D=2)
    z = Tensor(np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32) + 3)   # (B, D), far from 0
    opt = optim.Adam(vq.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        q = vq(z)
        losses.append(float(q.codebook_loss.data))
        opt.zero_grad()
        q.loss.backward()
        opt.step()
    assert losses[-1] < 0.2 * losses[0]


# ---------------------------------------------------------------------- EMA
def test_ema_update_on_a_hand_sized_example():
    for eps, expected in [(0.0, [1.0, 9.5]),
                          # n = [1.5, 1], N = 2.5, n~ = (n + 0.5) / (2.5 + 2 * 0.5) * 2.5 = [10/7, 7.5/7]
                          (0.5, [1.5 / (10 / 7), 9.5 / (7.5 / 7)])]:
        vq = _vq(K=2, D=1, ema=True, decay=0.5, eps=eps, beta=0.25)
        _set_codebook(vq, [[0.0], [10.0]])
        z = Tensor(np.array([[1.0], [2.0], [9.0]], np.float32))      # (B, D): 1 and 2 -> code 0, 9 -> code 1
        q = vq(z)
        np.testing.assert_array_equal(q.indices, [0, 0, 1])
        # n = 0.5 [1, 1] + 0.5 [2, 1];  m = 0.5 [0, 10] + 0.5 [1 + 2, 9]
        np.testing.assert_allclose(vq.ema_count, [1.5, 1.0], rtol=1e-6)
        np.testing.assert_allclose(vq.ema_sum[:, 0], [1.5, 9.5], rtol=1e-6)
        np.testing.assert_allclose(vq.codebook[:, 0], expected, rtol=1e-5)
        # with EMA only the commitment term is a loss; the codebook is a buffer with no gradient
        assert float(q.codebook_loss.data) == 0.0 and vq.parameters() == []
        np.testing.assert_allclose(float(q.loss.data), 0.25 * float(q.commitment_loss.data), rtol=1e-6)
        vq.eval()
        before = vq.codebook.copy()
        vq(z)
        np.testing.assert_array_equal(vq.codebook, before)            # eval mode: no update


# ---------------------------------------------------------------------- k-means and restarts
def _clusters(k=6, per=40, D=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, D)).astype(np.float32) * 5
    points = (centres[:, None] + 0.1 * rng.standard_normal((k, per, D))).reshape(-1, D).astype(np.float32)
    return centres, points[rng.permutation(len(points))]


def test_kmeans_finds_separated_clusters():
    centres, points = _clusters()
    best = min((nn.kmeans(points, 6, iters=10, rng=np.random.default_rng(s)) for s in range(5)),
               key=lambda ck: nn.squared_distances(points, ck[0]).min(1).sum())
    c, counts = best
    nearest = nn.squared_distances(centres, c).argmin(1)
    assert sorted(nearest) == list(range(6))                          # one centroid per cluster
    np.testing.assert_allclose(c[nearest], centres, atol=0.1)
    np.testing.assert_array_equal(counts[nearest], 40)


def test_lloyd_iterations_never_increase_the_error():
    _, points = _clusters(seed=3)
    error = lambda c: nn.squared_distances(points, c).min(1).mean()
    start, _ = nn.kmeans(points, 6, iters=0, rng=np.random.default_rng(7))    # k random rows of the batch
    errors = [error(nn.kmeans(points, 6, iters=n, rng=np.random.default_rng(7))[0]) for n in (1, 2, 5)]
    assert error(start) > errors[0] >= errors[1] >= errors[2]


def test_kmeans_from_given_starting_centroids():
    """start (k, D) replaces the random rows: iters=0 returns it; on 1-D data that is mostly one value (as
    gray levels of digits, mostly black) evenly spaced starts find every mass, random rows do not."""
    x = np.concatenate([np.zeros(900), np.full(50, 0.5), np.ones(50)]).astype(np.float32)[:, None]
    start = np.linspace(0, 1, 3, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(nn.kmeans(x, 3, iters=0, start=start)[0], start)
    c, counts = nn.kmeans(x, 3, iters=5, start=start)
    np.testing.assert_allclose(c[:, 0], [0, 0.5, 1], atol=1e-6)
    np.testing.assert_array_equal(counts, [900, 50, 50])
    random_start, _ = nn.kmeans(x, 3, iters=5, rng=np.random.default_rng(0))
    assert (random_start[:, 0] == 0).sum() >= 2                      # two centroids stuck on the black mass
    with pytest.raises(ValueError, match=r"kmeans: start must have shape \(k, D\) = \(3, 1\)"):
        nn.kmeans(x, 3, start=np.zeros((2, 1), np.float32))


def test_kmeans_init_reduces_the_quantisation_error_once():
    _, points = _clusters()
    z = Tensor(points)                                                # (B, D)
    vq = _vq(K=6, D=4, kmeans_init=True)
    assert not vq.initialized
    vq.eval()
    before = float(vq(z).commitment_loss.data)                        # eval: no initialisation
    assert not vq.initialized
    vq.train()
    nn.manual_seed(5)
    vq(z)
    c, _ = nn.kmeans(points, 6, iters=10, rng=np.random.default_rng(5))   # the same draws as inside vq
    np.testing.assert_array_equal(vq.codebook.data, c)
    vq.eval()
    after = float(vq(z).commitment_loss.data)
    assert vq.initialized and after < 0.2 * before
    # a checkpoint remembers it: a fresh quantizer loaded from it is not re-initialised on its next batch
    fresh = _vq(K=6, D=4, kmeans_init=True)
    fresh.load_state_dict(vq.state_dict())
    codes = fresh.codebook.data.copy()
    fresh(Tensor(points[:10] + 1))
    np.testing.assert_array_equal(fresh.codebook.data, codes)


def test_kmeans_init_sets_the_ema_statistics():
    _, points = _clusters()
    vq = _vq(K=6, D=4, kmeans_init=True, ema=True, decay=0.99)
    nn.manual_seed(5)
    vq(Tensor(points))
    c, counts = nn.kmeans(points, 6, iters=10, rng=np.random.default_rng(5))
    # the init sets n_i = |cluster i|, m_i = n_i c_i; the EMA step on the same batch (same clusters) keeps them
    np.testing.assert_allclose(vq.ema_count, counts, rtol=1e-5)
    np.testing.assert_allclose(vq.ema_sum, c * counts[:, None], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vq.codebook, c, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_is_restarted_at_an_encoder_output(ema):
    vq = _vq(K=3, D=2, ema=ema, restart_dead=True, dead_after=2)
    _set_codebook(vq, [[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]])        # code 2 is far from everything
    z = Tensor(np.random.default_rng(0).uniform(0, 1, (16, 2)).astype(np.float32))
    vq(z)
    assert list(vq.unused_steps) == [0, 0, 1] and vq._codebook_array()[2, 0] > 99
    vq(z)                                                              # unused for 2 steps: restarted
    code = vq._codebook_array()[2]
    assert vq.unused_steps[2] == 0
    assert np.any(np.all(z.data == code, axis=1))                      # moved onto one of this batch's z
    if ema:
        assert vq.ema_count[2] == 1 and np.array_equal(vq.ema_sum[2], code)
    assert vq(z).codes_used == 3


# ---------------------------------------------------------------------- perplexity, state, errors
def test_perplexity_uniform_and_single_code():
    assert nn.perplexity(np.array([5, 5, 5, 5])) == pytest.approx(4.0)
    assert nn.perplexity(np.array([0, 20, 0, 0])) == pytest.approx(1.0)
    assert nn.perplexity(np.array([3, 1, 0, 0])) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    vq = _vq(K=4, D=2)
    codes = np.array([[0, 0], [0, 5], [5, 0], [5, 5]], np.float32)
    _set_codebook(vq, codes)
    q = vq(Tensor(np.repeat(codes, 3, axis=0)))                        # each code 3 times
    assert q.perplexity == pytest.approx(4.0) and q.codes_used == 4
    q = vq(Tensor(np.repeat(codes[:1], 12, axis=0)))                   # all on code 0
    assert q.perplexity == pytest.approx(1.0) and q.codes_used == 1


def test_state_dict_holds_codebook_and_statistics():
    assert list(_vq().state_dict()) == ["codebook", "unused_steps", "initialized"]
    vq = _vq(ema=True, kmeans_init=True)
    assert list(vq.state_dict()) == ["codebook", "ema_count", "ema_sum", "unused_steps", "initialized"]
    vq(_z(4, 4, 3, 3))
    copy = _vq(ema=True, kmeans_init=True)
    copy.load_state_dict(vq.state_dict())
    for k, v in vq.state_dict().items():
        np.testing.assert_array_equal(copy.state_dict()[k], v)


def test_errors_name_the_expected_shape():
    vq = _vq(K=8, D=4)
    with pytest.raises(ShapeError, match=r"\(B, 4, \*spatial\), got \(2, 5, 4\)"):
        vq(_z(2, 5, 4))
    with pytest.raises(ValueError, match="decay"):
        nn.VectorQuantizer(8, 4, ema=True, decay=1.0)


def test_kmeans_plus_plus_starts_one_centroid_in_every_far_apart_group():
    """Random rows would often put two starts in one of 8 equal groups (a chance of 1 - 8!/8^8 = 99.8%);
    k-means++ draws in proportion to the squared distance, so each group gets one."""
    blobs = np.repeat(np.eye(8) * 100, 50, axis=0) + np.random.default_rng(0).normal(0, 1, (400, 8))
    for seed in range(5):
        start = nn.kmeans_plus_plus(blobs, 8, np.random.default_rng(seed))
        assert start.shape == (8, 8)
        assert sorted(start.argmax(axis=1)) == list(range(8))
        centroids, counts = nn.kmeans(blobs, 8, rng=np.random.default_rng(seed), start=start)
        assert (counts == 50).all()


def test_kmeans_plus_plus_never_repeats_a_row_while_another_is_left():
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]), 100, axis=0)    # 3 distinct rows, many copies
    start = nn.kmeans_plus_plus(x, 3, np.random.default_rng(1))
    assert len({tuple(r) for r in start}) == 3
    assert len(nn.kmeans_plus_plus(x[:1], 2, np.random.default_rng(0))) == 2   # fewer distinct rows than k
