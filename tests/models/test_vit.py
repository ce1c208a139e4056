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


def test_patch_distances_are_pixel_distances_between_patch_centres():
    d = build().patch_distances()                      # 7 x 7 grid of 4 x 4 patches
    assert d.shape == (49, 49) and np.allclose(d, d.T) and (np.diag(d) == 0).all()
    assert d[0, 1] == 4 and d[0, 7] == 4 and np.isclose(d[0, 8], 4 * np.sqrt(2)) and np.isclose(d[0, 48], 24 * np.sqrt(2))


def test_attention_distance_is_zero_for_self_attention_and_the_mean_for_uniform(monkeypatch):
    """The distance reads the patch block of the weights, renormalised: [CLS] columns do not count."""
    model = build()
    T, dist = 50, model.patch_distances()
    own = np.zeros((3, 2, T, T))
    own[:, :, 1:, 1:] = 0.6 * np.eye(T - 1)            # 0.6 on its own patch, 0.4 on [CLS]
    own[:, :, :, 0] += 0.4
    uniform = np.full((3, 2, T, T), 1.0 / T)
    monkeypatch.setattr(model, "attention_maps", lambda images: [own, uniform])
    d = model.attention_distance(images(3))
    assert d.shape == (2, 2)
    np.testing.assert_allclose(d[0], 0, atol=1e-12)
    np.testing.assert_allclose(d[1], dist.mean(), rtol=1e-12)


def test_attention_distance_of_a_model_reads_its_attention_weights():
    model = build(depth=2)
    x = images(2)
    maps = model.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 50, 50)
    w = maps[1][:, :, 1:, 1:]                          # block 2: patch queries over patch keys
    expected = ((w / w.sum(-1, keepdims=True)) * model.patch_distances()).sum(-1).mean(axis=(0, 2))
    np.testing.assert_allclose(model.attention_distance(x)[1], expected, rtol=1e-6)
    assert (model.attention_distance(x) > 0).all() and (model.attention_distance(x) < 24 * np.sqrt(2)).all()


def test_the_evaluation_reports_the_distance_of_every_head(tmp_path):
    model = build(depth=2)
    x, y = images(4), np.arange(4)
    result = model.evaluate_representation(x, y, n=2)
    assert set(result) == {"attention_distance_px", "attention_distance_uniform_px"}
    assert np.array(result["attention_distance_px"]).shape == (2, 2)
    assert result["attention_distance_uniform_px"] == round(float(model.patch_distances().mean()), 2)
    model.save_attention_distance(x, tmp_path / "distance.png")
    assert (tmp_path / "distance.png").stat().st_size > 0


def test_parameter_count_counts_the_parameters_of_the_built_model():
    from tinygen.models.vit import parameter_count
    for kw, size, channels, classes in [({}, 28, 1, 10), (dict(depth=3, num_heads=4, dim=24, mlp_ratio=3.0), 28, 1, 10),
                                        (dict(patch_size=7, dim=8), 28, 3, 5), (dict(patch_size=4), 32, 3, 100)]:
        config = ViT.Config(**{**TINY, **kw})
        model = ViT(config, image_size=size, channels=channels, num_classes=classes)
        assert parameter_count(config, size, channels, classes) == sum(p.data.size for p in model.parameters())
    assert parameter_count(ViT.Config()) == sum(p.data.size for p in ViT().parameters())   # the recipe


def test_the_papers_sizes_have_the_papers_parameter_counts():
    """Table 1: Base 86M, Large 307M, Huge 632M (16 x 16 patches of 224 x 224 RGB images, 1,000 classes)."""
    from tinygen.models.vit import SIZES, parameter_count
    for name, millions in {"Base": 86, "Large": 307, "Huge": 632}.items():
        count = parameter_count(ViT.Config(patch_size=16, **SIZES[name]), image_size=224, channels=3, num_classes=1000)
        assert abs(count / 1e6 - millions) / millions < 0.01, (name, count)
