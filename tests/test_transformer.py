"""Tests for tinygen.nn.transformer: the Transformer stack, patchify / unpatchify / PatchEmbed and the
position embeddings."""
import numpy as np
import pytest

import autograd.functional as F
from autograd import ShapeError, Tensor, gradcheck, no_grad
from tinygen import nn


def _x(*shape, seed=0, grad=False):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), requires_grad=grad)


# ---------------------------------------------------------------------- Transformer
def test_transformer_is_blocks_then_final_norm():
    nn.manual_seed(0)
    net = nn.Transformer(16, depth=3, num_heads=4, mlp_ratio=2)
    names = [n for n, _ in net.named_parameters()]
    assert names[0] == "blocks.0.ln1.weight" and names[-2:] == ["norm.weight", "norm.bias"]
    assert len(net.blocks) == 3 and net.blocks[1].mlp[0].weight.shape == (32, 16)
    x = _x(2, 5, 16)
    with no_grad():
        y = net(x)
        h = x
        for block in net.blocks:
            h = block(h)
        np.testing.assert_allclose(y.data, net.norm(h).data, rtol=1e-6, atol=1e-6)
        # the final LayerNorm (weight 1, bias 0 at initialisation) leaves every token with mean 0, variance 1
        np.testing.assert_allclose(y.data.mean(axis=-1), 0, atol=1e-5)
        np.testing.assert_allclose(y.data.var(axis=-1), 1, atol=1e-3)


def test_return_layers_gives_the_block_outputs():
    net = nn.Transformer(8, depth=4, num_heads=2)
    x = _x(2, 3, 8)
    with no_grad():
        y, (h1, h_last) = net(x, return_layers=(1, -1))
        h = net.blocks[1](net.blocks[0](x))
        np.testing.assert_allclose(h1.data, h.data, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(net.norm(h_last).data, y.data, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(net(x).data, y.data)
    with pytest.raises(ValueError, match="out of range for depth 4"):
        net(x, return_layers=(4,))


def _gradient_by_position(net, x, t, context=None):
    """d(sum_d w_d y[:, t, d]) / dx for a random w: which input positions reach output position t."""
    x = Tensor(x.data.copy(), requires_grad=True)
    y = net(x, context=context)
    w = np.zeros(y.shape, np.float32)
    w[:, t] = np.random.default_rng(t).standard_normal(w[:, t].shape)
    (y * Tensor(w)).sum().backward()
    return np.abs(x.grad).sum(axis=(0, 2))  # (T,)


def test_causal_transformer_output_t_has_zero_gradient_to_inputs_after_t():
    nn.manual_seed(1)
    T = 6
    net = nn.Transformer(8, depth=2, num_heads=2, causal=True)
    x = _x(2, T, 8, seed=2)
    for t in range(T):
        g = _gradient_by_position(net, x, t)
        assert np.all(g[t + 1:] == 0), (t, g)          # exactly zero, not merely small
        assert np.all(g[:t + 1] > 0), (t, g)           # and every earlier position does reach it
    full = nn.Transformer(8, depth=2, num_heads=2)     # without the mask the past sees the future
    assert np.all(_gradient_by_position(full, x, 0)[1:] > 0)


@pytest.mark.parametrize("chunks", [(7,), (1,) * 7, (3, 1, 2, 1)])
def test_the_kv_cache_gives_the_plain_forward_outputs(chunks):
    """forward_cached over the positions in chunks (a prompt at once, then one at a time) equals the
    plain causal forward pass of the whole sequence, with and without a cross-attention context."""
    for cross in (None, 6):
        nn.manual_seed(0)
        net = nn.Transformer(16, depth=2, num_heads=4, causal=True, cross_dim=cross)
        net.eval()
        x, context = _x(2, 7, 16), (_x(2, 3, 6, seed=1) if cross else None)
        with no_grad():
            full = net(x, context=context).numpy()                     # (2, 7, 16)
            cache, outputs, start = net.new_cache(2, 7), [], 0
            for T in chunks:
                outputs.append(net.forward_cached(x[:, start:start + T], cache, context=context).numpy())
                start += T
                assert cache.length == start
        np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, rtol=1e-5, atol=1e-5)


def test_the_kv_cache_refuses_what_it_cannot_serve():
    net = nn.Transformer(8, depth=1, num_heads=2, causal=True)
    cache = net.new_cache(1, 3)
    with no_grad():
        net.forward_cached(_x(1, 3, 8), cache)
        with pytest.raises(ValueError, match="do not fit a cache of 3"):
            net.forward_cached(_x(1, 1, 8), cache)
        with pytest.raises(ValueError, match="causal attention only"):
            nn.Transformer(8, depth=1, num_heads=2).forward_cached(_x(1, 1, 8), cache)


def test_causal_cross_attention_transformer():
    nn.manual_seed(3)
    net = nn.Transformer(8, depth=2, num_heads=2, causal=True, cross_dim=6)
    x, context = _x(2, 5, 8), _x(2, 3, 6, seed=4, grad=True)
    assert np.all(_gradient_by_position(net, x, 1, context)[2:] == 0)
    net.zero_grad()
    y = net(x, context=context)
    assert y.shape == (2, 5, 8)
    y.sum().backward()
    assert context.grad is not None and np.abs(context.grad).sum() > 0
    assert all(p.grad is not None for n, p in net.named_parameters() if "cross" in n)
    with pytest.raises(ValueError, match="context"):
        net(x)


def test_key_padding_mask_hides_the_padded_tokens():
    net = nn.Transformer(8, depth=2, num_heads=2)
    x = _x(2, 5, 8)
    keep = np.ones((2, 5), bool)
    keep[:, 3:] = False                                # the last two tokens are padding
    changed = x.data.copy()
    changed[:, 3:] = 100.0
    mask = keep[:, None, None, :]                      # (B, 1, 1, S): broadcast over heads and queries
    with no_grad():
        a, b = net(x, attn_mask=mask).data, net(Tensor(changed), attn_mask=mask).data
    np.testing.assert_allclose(a[:, :3], b[:, :3], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- patches
def test_patchify_layout_and_inverse():
    x = _x(2, 3, 8, 12)
    tokens = nn.patchify(x, 4)
    assert tokens.shape == (2, 6, 48)                  # (8/4)(12/4) = 6 patches of 3 * 4 * 4
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(tokens.data[:, i * 3 + j],
                                          x.data[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(2, -1))
    np.testing.assert_array_equal(nn.unpatchify(tokens, 4, 3, 8, 12).data, x.data)
    t = _x(2, 6, 48, seed=1)
    np.testing.assert_array_equal(nn.patchify(nn.unpatchify(t, 4, 3, 8, 12), 4).data, t.data)


def test_patchify_and_unpatchify_gradcheck():
    assert gradcheck(lambda a: nn.patchify(a, 2), _x(2, 2, 4, 6))
    assert gradcheck(lambda t: nn.unpatchify(t, 2, 2, 4, 6), _x(2, 6, 8))


def test_patch_errors_name_the_sizes():
    with pytest.raises(ShapeError, match="28x30 is not divisible by the patch size 4"):
        nn.patchify(_x(1, 1, 28, 30), 4)
    with pytest.raises(ShapeError, match=r"expected images \(B, C, H, W\)"):
        nn.patchify(_x(1, 28, 28), 4)
    with pytest.raises(ShapeError, match=r"expected \(B, 4, 8\)"):
        nn.unpatchify(_x(1, 4, 9), 2, 2, 4, 4)
    with pytest.raises(ShapeError, match="not divisible"):
        nn.unpatchify(_x(1, 4, 8), 3, 2, 4, 4)


def test_patch_embed_equals_a_strided_convolution():
    nn.manual_seed(0)
    embed = nn.PatchEmbed(4, 2, 16)
    conv = nn.Conv2d(2, 16, kernel_size=4, stride=4)
    conv.weight.data[...] = embed.proj.weight.data.reshape(16, 2, 4, 4)   # (D, C p p) -> (D, C, p, p)
    conv.bias.data[...] = embed.proj.bias.data
    x = _x(3, 2, 8, 12)
    with no_grad():
        tokens = embed(x)                                                # (B, N, D)
        grid = conv(x)                                                   # (B, D, 2, 3)
    assert tokens.shape == (3, 6, 16)
    np.testing.assert_allclose(tokens.data, grid.data.reshape(3, 16, 6).transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match=r"\(B, 2, H, W\)"):
        embed(_x(3, 1, 8, 12))


# ---------------------------------------------------------------------- position embeddings
def test_learned_position_embedding():
    nn.manual_seed(0)
    pos = nn.LearnedPositionEmbedding(50, 64)
    assert abs(float(pos.weight.data.std()) - 0.02) < 0.002 and abs(float(pos.weight.data.mean())) < 0.002
    x = _x(2, 7, 64, grad=True)
    y = pos(x)
    np.testing.assert_allclose(y.data, x.data + pos.weight.data[None, :7], rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(pos.weight.grad[:7], 2.0)   # summed over the batch of 2
    np.testing.assert_array_equal(pos.weight.grad[7:], 0.0)
    with pytest.raises(ShapeError, match="num_positions = 50"):
        pos(_x(1, 51, 64))


def test_sinusoidal_position_embedding_is_vaswani_with_cos_and_sin_halves():
    T, D = 20, 16
    pe = nn.sinusoidal_position_embedding(T, D)
    assert pe.shape == (T, D) and pe.dtype == np.float32 and not pe.requires_grad
    t = np.arange(T)[:, None]
    i = np.arange(D // 2)[None, :]
    angle = t / 10000 ** (2 * i / D)                  # PE(t, 2i) = sin(angle), PE(t, 2i+1) = cos(angle) in the paper
    np.testing.assert_allclose(pe.data[:, :D // 2], np.cos(angle), atol=1e-6)
    np.testing.assert_allclose(pe.data[:, D // 2:], np.sin(angle), atol=1e-6)
    np.testing.assert_array_equal(pe.data, nn.timestep_embedding(np.arange(T), D).data)


def test_sincos_2d_position_embedding():
    pe = nn.sincos_2d_position_embedding(3, 4, 16)
    assert pe.shape == (12, 16) and not pe.requires_grad
    grid = pe.data.reshape(3, 4, 16)                  # raster order: patch n = i * 4 + j
    row_half, col_half = grid[..., :8], grid[..., 8:]
    np.testing.assert_array_equal(row_half, np.broadcast_to(row_half[:, :1], row_half.shape))  # depends on i only
    np.testing.assert_array_equal(col_half, np.broadcast_to(col_half[:1], col_half.shape))     # on j only
    np.testing.assert_array_equal(row_half[:, 0], nn.sinusoidal_position_embedding(3, 8).data)
    np.testing.assert_array_equal(col_half[0], nn.sinusoidal_position_embedding(4, 8).data)
    assert len(np.unique(pe.data.round(6), axis=0)) == 12   # every patch gets its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        nn.sincos_2d_position_embedding(3, 3, 10)


def test_vit_style_forward_trains():
    """Patches + CLS + positions + Transformer + head: one Adam step lowers the loss of a fixed batch."""
    from tinygen import optim
    nn.manual_seed(0)
    embed, pos = nn.PatchEmbed(4, 1, 16), nn.LearnedPositionEmbedding(5, 16)
    net, head = nn.Transformer(16, depth=2, num_heads=2), nn.Linear(16, 3)
    cls = nn.Parameter(np.zeros((1, 1, 16), np.float32))
    params = embed.parameters() + pos.parameters() + net.parameters() + head.parameters() + [cls]
    opt = optim.Adam(params, lr=1e-2)
    x, y = _x(6, 1, 8, 8), np.array([0, 1, 2, 0, 1, 2])

    def loss():
        tokens = embed(x)                                                   # (B, 4, 16)
        tokens = F.concat([F.expand(cls, 6, 1, 16), tokens], axis=1)        # (B, 5, 16)
        return F.cross_entropy(head(net(pos(tokens))[:, 0]), y)

    first = loss()
    first.backward()
    opt.step()
    assert float(loss().data) < float(first.data)
    assert cls.grad is not None and np.abs(cls.grad).sum() > 0
