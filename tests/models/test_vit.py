"""ViT on tiny configs: shapes, the [CLS] read-out, training lowers the loss, and the two pictures
(position-embedding similarity, attention rollout) against their definitions."""
import numpy as np

from autograd import Tensor
from tinygen.models import get_model_class

ViT = get_model_class("vit")
TINY = dict(dim=16, depth=2, num_heads=2, mlp_ratio=2.0, augment=0)


def build(**kw):
    return ViT(ViT.Config(**{**TINY, **kw}))


def images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 1, 28, 28)) * 255).astype(np.uint8)


def test_tokens_and_logits_shapes():
    model = build()
    x = Tensor(images(3).astype(np.float32) / 255)
    assert model.tokens(x).shape == (3, 50, 16)          # [CLS] + 49 patches of 4 x 4
    assert model.logits(x).shape == (3, 10)


def test_prediction_reads_the_cls_token_only():
    """The head sees only position 0 of the encoder's output: its gradient reaches no other position."""
    model = build()
    h = Tensor(np.random.default_rng(1).standard_normal((2, 50, 16)).astype(np.float32), requires_grad=True)
    y = model.encoder(h)
    out = model.head(y[:, 0]).sum()
    out.backward()
    assert np.abs(h.grad).sum() > 0
    z = Tensor(h.data.copy(), requires_grad=True)
    model.encoder(z)[:, 1:].sum().backward()              # and the other positions do reach the inputs
    assert np.abs(z.grad).sum() > 0


def test_training_lowers_the_loss_on_a_fixed_batch():
    model = build(lr=3e-3, lr_schedule="constant")
    x, y = images(16), np.arange(16) % 10
    opts = model.configure_optimizers()
    losses = [model.training_step(model.prepare_batch(x, y), opts)["loss"] for _ in range(40)]
    assert losses[-1] < 0.7 * losses[0]


def test_position_similarity_is_a_cosine_matrix():
    model = build()
    sim = model.position_similarity()
    assert sim.shape == (49, 7, 7)
    flat = sim.reshape(49, 49)
    np.testing.assert_allclose(np.diag(flat), 1, atol=1e-6)
    np.testing.assert_allclose(flat, flat.T, atol=1e-6)
    assert flat.max() <= 1 + 1e-6 and flat.min() >= -1 - 1e-6


def test_attention_rollout_of_one_block_is_its_cls_row():
    """With a single block R = (mean_h P + I) / 2, and the map is its [CLS] row over the patches."""
    model = build(depth=1)
    x = images(2)
    maps = model.attention_rollout(x)
    assert maps.shape == (2, 7, 7)
    block = model.encoder.blocks[0]
    h = model.tokens(Tensor(x.astype(np.float32) / 255))
    P = block.attn.attention_weights(block.ln1(h)).numpy().mean(axis=1)   # (B, T, T)
    expected = 0.5 * (P + np.eye(50))[:, 0, 1:]
    np.testing.assert_allclose(maps.reshape(2, 49), expected, rtol=1e-5, atol=1e-7)


def test_rollout_is_a_distribution_over_the_tokens():
    model = build(depth=3)
    maps = model.attention_rollout(images(2))
    assert (maps >= 0).all() and (maps.sum(axis=(1, 2)) <= 1 + 1e-6).all()


def test_pictures_are_written(tmp_path):
    model = build()
    model.save_pictures(images(4), tmp_path / "pos.png", tmp_path / "roll.png")
    assert (tmp_path / "pos.png").stat().st_size > 0 and (tmp_path / "roll.png").stat().st_size > 0


def test_flip_mirrors_some_images_left_right_and_keeps_the_others():
    model = build(flip=True)
    x = images(64)
    batch, _ = model.prepare_batch(x, np.zeros(64, int))
    expected = x.astype(np.float32) / 255
    mirrored = np.all(np.isclose(batch.data, expected[..., ::-1]), axis=(1, 2, 3))
    kept = np.all(np.isclose(batch.data, expected), axis=(1, 2, 3))
    assert np.all(mirrored | kept) and 10 < mirrored.sum() < 54


def test_position_neighbour_fraction_reads_a_2d_layout():
    model = build(dim=50)
    g = model.grid
    where = np.stack(np.divmod(np.arange(g * g), g), axis=1)                      # (49, 2): (row, col)
    dist2 = ((where[:, None] - where[None]) ** 2).sum(-1)                         # (49, 49)
    layout = np.pad(np.exp(-dist2 / 2.0), ((0, 0), (0, 1)))                       # a bump at each patch
    model.pos_embed.weight.data[1:] = layout.astype(np.float32)
    assert model.position_neighbour_fraction() == 1.0
    model.pos_embed.weight.data[1:] = np.random.default_rng(0).standard_normal((g * g, 50)).astype(np.float32)
    assert model.position_neighbour_fraction() < 0.5


def test_position_mirror_fraction_reads_a_mirrored_layout():
    model = build(dim=50)
    g = model.grid
    row, col = np.divmod(np.arange(g * g), g)
    # each embedding a bump at its column folded onto the left half: patch (r, c) and (r, g-1-c) nearly equal
    fold = np.minimum(col, g - 1 - col)
    where = np.stack([row, fold], axis=1).astype(np.float64)
    dist2 = ((where[:, None] - where[None]) ** 2).sum(-1)
    layout = np.exp(-dist2 / 2.0) + 1e-3 * np.eye(g * g)                         # (49, 49), mirror ties broken
    model.pos_embed.weight.data[1:] = np.pad(layout, ((0, 0), (0, 1))).astype(np.float32)
    assert model.position_mirror_fraction() == 1.0
    g2 = np.stack([row, col], axis=1).astype(np.float64)                          # the plain 2-D layout
    model.pos_embed.weight.data[1:] = np.pad(np.exp(-((g2[:, None] - g2[None]) ** 2).sum(-1) / 2.0),
                                             ((0, 0), (0, 1))).astype(np.float32)
    assert model.position_mirror_fraction() < 0.2
