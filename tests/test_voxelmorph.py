"""VoxelMorph: our VxmDense against upstream voxelmorph 0.2 (weights, outputs, loss, training)."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from baselines.voxelmorph import NCC, VoxelMorphLoss, VxmDense, build, gradient_l2
from equireg import methods, training
from equireg.losses import SSD
from equireg.transforms import warp

SHAPES = [(32, 32), (32, 32, 32)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread is fastest, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vxm():
    """Upstream voxelmorph 0.2 on its PyTorch backend (needs a shim on Python >= 3.11)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VXM_BACKEND", "pytorch")
        patch.setenv("NEURITE_BACKEND", "pytorch")
        patch.setattr(inspect, "getargspec", lambda f: tuple(inspect.getfullargspec(f))[:4], raising=False)
        yield pytest.importorskip("voxelmorph")


def _images(batch, shape, seed):
    """Smooth random images, so warping differences are not dominated by pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    pool = F.avg_pool2d if len(shape) == 2 else F.avg_pool3d
    return pool(torch.rand(batch, 1, *shape, generator=generator), 5, 1, 2)


def _upstream_and_ours(vxm, shape, flow_std=3.0):
    """An upstream network whose flow head is scaled up (displacements of a few voxels, so the
    integration matters), and ours with its weights loaded strictly."""
    torch.manual_seed(0)
    upstream = vxm.networks.VxmDense(shape)
    with torch.no_grad():
        upstream.flow.weight.normal_(0.0, flow_std)
    ours = build(len(shape))
    ours.load_state_dict(upstream.state_dict(), strict=True)
    return upstream, ours


def _centred_crop(tensor, shape):
    starts = [(big - small) // 2 for big, small in zip(tensor.shape[2:], shape)]
    return tensor[(slice(None), slice(None), *[slice(s, s + n) for s, n in zip(starts, shape)])]


def test_registry_builds_the_network_and_its_loss():
    net = methods.build("voxelmorph", 2)
    assert isinstance(net, VxmDense)
    assert isinstance(methods.loss_class("voxelmorph")(net, SSD(), 0.01), VoxelMorphLoss)


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_upstream_weights_load_and_every_output_matches(vxm, shape):
    upstream, ours = _upstream_and_ours(vxm, shape)
    moving, fixed = _images(2, shape, 1), _images(2, shape, 2)
    with torch.no_grad():
        warped, velocity = upstream(moving, fixed)
        _, displacement = upstream(moving, fixed, registration=True)
        fields = ours.fields(moving, fixed)
    assert displacement.abs().max() > 1.0, "displacements too small to test the integration"
    for name, theirs, mine in [("warped", warped, fields.warped), ("velocity", velocity, fields.velocity),
                               ("displacement", displacement, fields.displacement)]:
        error = (theirs - mine).abs().max().item()
        assert error < 1e-6, f"{name} differs from upstream by {error:.3g}"


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("shape", [(32, 48), (16, 32, 16)], ids=["2d", "3d"])
def test_transform_in_unit_coordinates_warps_like_upstream(vxm, shape):
    # float64: in float32 the [0, 1] coordinates alone round by ~1e-7 * (N - 1) voxels
    upstream, ours = _upstream_and_ours(vxm, shape)
    upstream, ours = upstream.double(), ours.double()
    moving, fixed = _images(1, shape, 3).double(), _images(1, shape, 4).double()
    with torch.no_grad():
        warped, _ = upstream(moving, fixed, registration=True)
        phi = ours(moving, fixed)
        ours_warped = warp(moving, phi.field(shape, like=moving), padding_mode="zeros")
    error = (warped - ours_warped).abs().max().item()
    assert error < 1e-9, f"warping by the [0, 1] transform differs from upstream by {error:.3g}"


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("shape", [(27, 21), (20, 17, 30)], ids=["2d", "3d"])
def test_sizes_not_divisible_by_16_match_upstream_on_the_padded_images(vxm, shape):
    padded = tuple(-(-n // 16) * 16 for n in shape)
    upstream, ours = _upstream_and_ours(vxm, padded)
    moving, fixed = _images(1, shape, 5), _images(1, shape, 6)
    pad = [p for n, m in zip(reversed(shape), reversed(padded)) for p in ((m - n) // 2, m - n - (m - n) // 2)]
    with torch.no_grad():
        warped, displacement = upstream(F.pad(moving, pad), F.pad(fixed, pad), registration=True)
        fields = ours.fields(moving, fixed)
        phi = ours(moving, fixed)
    assert fields.displacement.shape[2:] == shape
    for name, theirs, mine in [("displacement", _centred_crop(displacement, shape), fields.displacement),
                               ("warped", _centred_crop(warped, shape), fields.warped)]:
        error = (theirs - mine).abs().max().item()
        assert error < 1e-6, f"{name} on the original grid differs from upstream by {error:.3g}"
    on_grid = warp(moving, phi.field(shape), padding_mode="zeros")
    assert (on_grid - fields.warped).abs().max() < 1e-5


def test_padding_is_centred_and_cropped_back():
    torch.manual_seed(0)
    net = build(2)
    with torch.no_grad():
        net.flow.weight.normal_(0.0, 3.0)
        moving, fixed = _images(1, (27, 21), 7), _images(1, (27, 21), 8)
        fields = net.fields(moving, fixed)
        manual = net.fields(F.pad(moving, (5, 6, 2, 3)), F.pad(fixed, (5, 6, 2, 3)))
    assert fields.displacement.shape == (1, 2, 27, 21) and fields.velocity.shape == (1, 2, 16, 16)
    assert torch.equal(fields.displacement, _centred_crop(manual.displacement, (27, 21)))
    assert torch.equal(fields.velocity, manual.velocity)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="dimension"):
        build(1)
    with pytest.raises(ValueError, match="integration_steps"):
        build(2, integration_steps=-1)
    with pytest.raises(ValueError, match="moving and fixed"):
        build(2)(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 16))
    with pytest.raises(ValueError, match="VxmDense"):
        VoxelMorphLoss(torch.nn.Identity(), SSD(), 0.01)


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_loss_terms_and_gradients_match_upstream_3d(vxm):
    # upstream 0.2's Grad is 3-D only, so the term-by-term comparison is in 3-D
    shape = (32, 32, 32)
    upstream, ours = _upstream_and_ours(vxm, shape, flow_std=0.3)
    moving, fixed = _images(1, shape, 9), _images(1, shape, 10)
    warped, velocity = upstream(moving, fixed)
    similarity = vxm.losses.MSE().loss(fixed, warped)
    regularization = vxm.losses.Grad("l2", loss_mult=2).loss(None, velocity)
    (similarity + 0.01 * regularization).backward()
    terms = VoxelMorphLoss(ours, SSD(), 0.01)(moving, fixed)
    terms["loss"].backward()
    assert abs(terms["similarity"].item() - similarity.item()) < 1e-7
    assert abs(terms["regularization"].item() - regularization.item()) < 1e-7 * max(1.0, regularization.item())
    theirs = dict(upstream.named_parameters())
    for name, parameter in ours.named_parameters():
        scale = theirs[name].grad.abs().max().item()
        assert (parameter.grad - theirs[name].grad).abs().max().item() <= 1e-5 * scale, name


@pytest.mark.peers
@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 14)], ids=["2d", "3d"])
def test_box_ncc_matches_upstream_maths(vxm, monkeypatch, shape):
    # upstream's NCC moves its window to "cuda"; on the CPU we let that move be a no-op
    module = vxm.torch.losses

    class _StayOnCPU:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def ones(*args, **kwargs):
            window = torch.ones(*args, **kwargs)
            return type("Window", (), {"to": lambda self, device: window})()

    monkeypatch.setattr(module, "torch", _StayOnCPU())
    fixed, moving = _images(2, shape, 11), _images(2, shape, 12)
    theirs = module.NCC().loss(fixed, moving)
    assert abs(NCC(9)(moving, fixed).item() - theirs.item()) < 1e-6
    assert abs(NCC(5)(moving, fixed).item() - module.NCC([5] * len(shape)).loss(fixed, moving).item()) < 1e-6
    assert NCC(9)(fixed, fixed).item() < -0.99


def test_gradient_penalty_is_mean_over_axes():
    field = torch.zeros(1, 2, 4, 5)
    field[:, 0] = torch.arange(4.0)[:, None] * 2  # slope 2 along axis 0 in channel 0 only
    # axis 0: mean over channels and differences of (4, 0) = 2; axis 1: 0; averaged over axes: 1
    assert gradient_l2(field).item() == pytest.approx(1.0)


def _grad_l2_upstream_nd(velocity, loss_mult):
    """Upstream's N-D Grad('l2') of later releases (0.2's is 3-D only), written out for 2-D."""
    dy = (velocity[:, :, 1:] - velocity[:, :, :-1]) ** 2
    dx = (velocity[:, :, :, 1:] - velocity[:, :, :, :-1]) ** 2
    return (dy.flatten(1).mean(-1) + dx.flatten(1).mean(-1)).mean() / 2 * loss_mult


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_matched_training_run_follows_upstream(vxm):
    shape, steps, lmbda = (32, 32), 50, 0.01
    torch.manual_seed(0)
    upstream = vxm.networks.VxmDense(shape)
    ours = build(2)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    loss = VoxelMorphLoss(ours, SSD(), lmbda)
    ours_optimizer = torch.optim.Adam(ours.parameters(), lr=1e-3)
    upstream_optimizer = torch.optim.Adam(upstream.parameters(), lr=1e-3)
    ours_curve, upstream_curve = [], []
    for step in range(steps):
        fixed = _images(4, shape, 100 + step)
        moving = torch.roll(fixed, shifts=(step % 3 - 1, 1 - step % 2), dims=(2, 3))

        ours_optimizer.zero_grad()
        total = loss(moving, fixed)["loss"]
        total.backward()
        ours_optimizer.step()
        ours_curve.append(total.item())

        upstream_optimizer.zero_grad()
        warped, velocity = upstream(moving, fixed)
        total = vxm.losses.MSE().loss(fixed, warped) + lmbda * _grad_l2_upstream_nd(velocity, 2)
        total.backward()
        upstream_optimizer.step()
        upstream_curve.append(total.item())
    ours_end, upstream_end = sum(ours_curve[-5:]) / 5, sum(upstream_curve[-5:]) / 5
    assert ours_end < 0.8 * sum(ours_curve[:5]) / 5, "training made no progress: the comparison is vacuous"
    gap = max(abs(a - b) / b for a, b in zip(ours_curve, upstream_curve))
    print(f"loss {ours_curve[0]:.4g} -> ours {ours_end:.6g}, upstream {upstream_end:.6g}; largest gap {gap:.2g}")
    assert abs(ours_end - upstream_end) < 0.1 * upstream_end, (ours_curve[-5:], upstream_curve[-5:])


def test_trains_through_the_shared_loop_with_either_similarity(tmp_path):
    def batches(step):
        fixed = _images(2, (32, 32), step)
        return torch.roll(fixed, 1, dims=2), fixed

    stages = [training.Stage("voxelmorph", 2, 1e-4, 0.01, {"name": "ssd"}),
              training.Stage("voxelmorph", 2, 1e-4, 1.0, {"name": "ssd"}, options={"ncc_window": 9})]
    torch.manual_seed(0)
    rows = training.train(build(2), stages, batches, tmp_path, progress=False)
    assert len(rows) == 4 and {"loss", "similarity", "regularization"} <= set(rows[0])
    assert rows[0]["similarity"] > 0 > rows[-1]["similarity"]  # MSE, then upstream's NCC (-mean cc)
