"""Ξ and its attention kernel: exactness of the chunked CPU kernel, shapes, parity with upstream."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from equireg.attention import CoordinateAttention, Featurizer, coordinate_attention, padded_identity
from equireg.equivariance import translate
from equireg.wrappers import DisplacementField


def dense_attention(query, key, value):
    return torch.softmax(query @ key.transpose(1, 2), dim=-1) @ value


def normalised(shape, scale, generator, dtype=torch.float64):
    x = torch.randn(*shape, generator=generator, dtype=dtype)
    return scale * x / x.norm(dim=-1, keepdim=True)


# scale 4 takes the bound-shift branch of the kernel, scale 100 the exact row-max branch
@pytest.mark.parametrize("scale", [4.0, 100.0])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 37, 64])
def test_chunked_attention_matches_dense_forward_and_gradients(scale, chunk_size):
    g = torch.Generator().manual_seed(0)
    batch, length, columns, channels, width = 2, 37, 53, 16, 4  # 37 rows: ragged last chunks
    q, k = normalised((batch, length, channels), scale, g), normalised((batch, columns, channels), scale, g)
    v = torch.randn(batch, columns, width, generator=g, dtype=torch.float64)
    grad = torch.randn(batch, length, width, generator=g, dtype=torch.float64)
    ours = [t.clone().requires_grad_() for t in (q, k, v)]
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    out = coordinate_attention(*ours, chunk_size=chunk_size)
    expected = dense_attention(*reference)
    assert (out - expected).abs().max() < 1e-5
    for name, a, b in zip("qkv", torch.autograd.grad(out, ours, grad), torch.autograd.grad(expected, reference, grad)):
        assert (a - b).abs().max() < 1e-5 * max(1.0, b.abs().max().item()), name


def test_chunked_attention_gradcheck():
    g = torch.Generator().manual_seed(1)
    q, k = normalised((1, 5, 3), 2.0, g), normalised((1, 6, 3), 2.0, g)
    v = torch.randn(1, 6, 4, generator=g, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: coordinate_attention(a, b, c, chunk_size=2), inputs)


def test_chunked_attention_float32_and_constant_values():
    g = torch.Generator().manual_seed(2)
    q, k = normalised((3, 300, 32), 4.0, g), normalised((3, 410, 32), 4.0, g)
    v = torch.rand(3, 410, 4, generator=g, dtype=torch.float64)
    query = q.float().requires_grad_()
    out = coordinate_attention(query, k.float(), v.float(), chunk_size=128)  # value needs no gradient
    assert (out.double() - dense_attention(q, k, v)).abs().max() < 1e-5
    out.sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The kernel blocks one batch element at a time single-threaded, the whole batch otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("scale", [4.0, 100.0])
def test_float32_kernel_is_as_accurate_as_float32_dense(scale, threads):
    """The fast path (exp2 of log2(e)-scaled logits, blocks by thread count, rank-(c+1) dS) in float32
    is within float32 round-off of the float64 reference: output and gradients within 3× the
    error of the plain dense computation in float32 (the backward's δ = rowsum(dO ∘ O), as
    FlashAttention's, cancels differently from autograd's, up to ~2.5× with sharp attention)."""
    g = torch.Generator().manual_seed(3)
    q, k = normalised((3, 130, 32), scale, g), normalised((3, 170, 32), scale, g)
    v = torch.rand(3, 170, 4, generator=g, dtype=torch.float64)
    grad = torch.randn(3, 130, 4, generator=g, dtype=torch.float64)

    def run(attention, dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k)]
        out = attention(*leaves, v.to(dtype))
        return [t.double() for t in (out, *torch.autograd.grad(out, leaves, grad.to(dtype)))]

    exact = run(dense_attention, torch.float64)
    ours = run(lambda a, b, c: coordinate_attention(a, b, c, chunk_size=48), torch.float32)  # blocks 48, 48, 34
    dense32 = run(dense_attention, torch.float32)
    for name, a, b, e in zip(("output", "grad_query", "grad_key"), ours, dense32, exact):
        error, reference_error = (a - e).abs().max().item(), (b - e).abs().max().item()
        assert error <= 3 * reference_error + 1e-7 * e.abs().max().item(), (name, error, reference_error)


def test_coordinate_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="incompatible"):
        coordinate_attention(torch.zeros(1, 4, 8), torch.zeros(1, 5, 7), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="chunk_size"):
        coordinate_attention(torch.zeros(1, 4, 8), torch.zeros(1, 5, 8), torch.zeros(1, 5, 4), chunk_size=0)


@pytest.mark.parametrize("dimension, shape", [(1, (20,)), (2, (12, 10)), (3, (6, 7, 5))])
def test_featurizer_keeps_the_grid_and_upstream_names(dimension, shape):
    net = Featurizer(dimension, channels=8)
    assert net(torch.rand(2, 1, *shape)).shape == (2, 8, *shape)
    names = {name.rsplit(".", 1)[0] for name, _ in net.named_parameters()}
    assert names == {f"convs.{i}" for i in range(10)} | {f"batchnorms.{i}" for i in range(3)}


def test_padded_identity_extrapolates_linearly():
    grid = padded_identity((5, 3), 2, torch.zeros(()))
    assert grid.shape == (1, 2, 9, 7)
    assert torch.allclose(grid[0, 0, :, 0], (torch.arange(9.0) - 2) / 4)
    assert torch.allclose(grid[0, 1, 0, :], (torch.arange(7.0) - 2) / 2)


@pytest.mark.parametrize("dimension, shape", [(2, (14, 11)), (3, (7, 6, 8))])
def test_xi_returns_a_displacement_of_the_right_shape(dimension, shape):
    xi = CoordinateAttention(dimension, feature_channels=8)
    displacement = xi(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape))
    assert displacement.shape == (2, dimension, *shape)
    with pytest.raises(ValueError, match="equal"):
        xi(torch.rand(1, 1, *shape), torch.rand(2, 1, *shape))


def textured_square(size=24, content=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    texture = F.interpolate(torch.rand(1, 1, content // 2, content // 2, generator=g), size=(content, content),
                            mode="bilinear", align_corners=True)
    image = torch.zeros(1, 1, size, size)
    start = (size - content) // 2
    image[:, :, start:start + content, start:start + content] = texture + 0.1
    return image


def test_xi_with_sharp_attention_recovers_a_translation():
    torch.manual_seed(0)
    xi = CoordinateAttention(2, feature_channels=16, feature_scale=100.0).eval()
    moving = textured_square()
    shift = (3, -2)
    fixed = translate(moving, shift)  # fixed(x) = moving(x + shift): phi(x) = x + shift
    with torch.no_grad():
        displacement = xi(moving, fixed)
    voxels = displacement * torch.tensor([23.0, 23.0]).reshape(1, 2, 1, 1)
    foreground = fixed[0, 0] > 0
    error = (voxels[0] - torch.tensor(shift, dtype=torch.float32).reshape(2, 1, 1)).norm(dim=0)[foreground]
    assert error.median() < 1e-3, error.median()


@pytest.mark.peers
@pytest.mark.parametrize("dimension, shape, channels", [(2, (12, 14), 128), (3, (6, 5, 7), 16)])
def test_upstream_attention_weights_load_and_agree(monkeypatch, dimension, shape, channels):
    pytest.importorskip("icon_registration")
    import icon_registration as icon
    from icon_registration import carl as upstream

    # upstream forbids the math SDPA kernel, the only one the CPU has for 4 value channels
    monkeypatch.setattr(torch.backends.cuda, "sdp_kernel", lambda **kwargs: contextlib.nullcontext())
    # its padded value grid is built in float32; follow the features' dtype to compare in float64
    pad_im = upstream.pad_im
    monkeypatch.setattr(upstream, "pad_im", lambda image, n: pad_im(image, n).to(image.dtype))
    torch.manual_seed(0)
    featurizer = upstream.NoDownsampleNet(dimension=dimension, output_dim=channels)
    attention = upstream.AttentionRegistration(featurizer, dimension=dimension)
    attention.dim = channels  # upstream hard-codes 128 feature channels in its reshapes
    theirs = icon.FunctionFromVectorField(attention)
    theirs.assign_identity_map([1, 1, *shape])
    ours = DisplacementField(CoordinateAttention(dimension, feature_channels=channels))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.double()
    ours.double()
    moving = torch.rand(2, 1, *shape, dtype=torch.float64)
    fixed = torch.rand(2, 1, *shape, dtype=torch.float64)
    for mode in ("train", "eval"):
        theirs.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            difference = (ours.net(moving, fixed) - attention(moving, fixed)).abs().max().item()
        assert difference < 1e-5, (mode, difference)
