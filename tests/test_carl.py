"""CARL's network trees and instance optimisation."""

import pytest
import torch
from helpers import assert_gradients_close, zero_gradient_parameters

from equireg import carl, methods
from equireg.attention import CoordinateAttention
from equireg.instance_optimization import instance_optimize
from equireg.losses import DiffusionLoss, similarity
from equireg.transforms import identity_map
from equireg.unet import TallUNet2
from equireg.wrappers import DisplacementField, Downsample, TwoStep

SMALL = {"feature_channels": 8}


def is_xi(module):
    return isinstance(module, DisplacementField) and isinstance(module.net, CoordinateAttention)


def is_psi(module):
    return isinstance(module, DisplacementField) and isinstance(module.net, TallUNet2)


def test_cvpr_tree_shape_and_stage_attributes():
    net = methods.build("carl", 2, feature_scale=7.0, **SMALL)
    # TwoStep{TwoStep{Down{TwoStep{Down{Ξ}, Ψ₁}}, Ψ₂}, Ψ₃}
    assert isinstance(net, TwoStep) and is_psi(net.netPsi)  # Ψ₃: added in the last stage
    two_stage = net.netPhi  # trained alone in stages 1-2 (module "netPhi")
    assert isinstance(two_stage, TwoStep) and is_psi(two_stage.netPsi)
    assert isinstance(two_stage.netPhi, Downsample)
    inner = two_stage.netPhi.net
    assert isinstance(inner, TwoStep) and is_psi(inner.netPsi) and isinstance(inner.netPhi, Downsample)
    xi = inner.netPhi.net
    assert is_xi(xi) and xi.net.feature_scale == 7.0 and xi.net.net.convs[0].out_channels == 8
    assert net.get_submodule("netPhi.netPhi.net.netPhi.net") is xi
    assert carl.attention(net) is xi.net and carl.featurizer(net) is xi.net.net
    assert carl.displacement_steps(net) == [inner.netPsi.net, two_stage.netPsi.net, net.netPsi.net]


def test_other_trees():
    draft = methods.build("carl_draft", 2, **SMALL)
    assert is_psi(draft.netPsi) and is_psi(draft.netPhi.netPsi) and is_xi(draft.netPhi.netPhi.net)
    transformer = methods.build("transformer_only", 2, **SMALL)
    assert isinstance(transformer.net, Downsample) and is_xi(transformer.net.net)
    unet = methods.build("unet_only", 2)
    assert isinstance(unet.net, Downsample) and is_psi(unet.net.net)
    with pytest.raises(TypeError, match="feature_scale"):
        methods.build("unet_only", 2, feature_scale=4.0)


@pytest.mark.parametrize("name", ["carl", "carl_draft", "transformer_only", "unet_only"])
def test_trees_register_2d_pairs(name):
    torch.manual_seed(0)
    options = {} if name == "unet_only" else SMALL
    net = methods.build(name, 2, **options).eval()
    moving, fixed = torch.rand(2, 1, 36, 28), torch.rand(2, 1, 36, 28)
    with torch.no_grad():
        field = net(moving, fixed).field((36, 28))
    assert field.shape == (2, 2, 36, 28) and torch.isfinite(field).all()


def test_transformer_only_registers_3d():
    torch.manual_seed(0)
    net = methods.build("transformer_only", 3, **SMALL).eval()
    with torch.no_grad():
        field = net(torch.rand(1, 1, 12, 10, 9), torch.rand(1, 1, 12, 10, 9)).field((12, 10, 9))
    assert field.shape == (1, 3, 12, 10, 9) and torch.isfinite(field).all()


def snapshot(net):
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


def same_weights(net, weights):
    return all(torch.equal(value, weights[name]) for name, value in net.state_dict().items())


def test_instance_optimization_fine_tunes_and_always_restores():
    torch.manual_seed(0)
    net = methods.build("transformer_only", 2, **SMALL).eval()
    loss = DiffusionLoss(net, similarity("ssd"), 0.1)
    first, second = (torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)), (torch.rand(1, 1, 16, 16),) * 2
    original = snapshot(net)
    with torch.no_grad():
        plain = net(*first).field((16, 16))
    tuned = instance_optimize(net, loss, *first, steps=3, lr=1e-2).field((16, 16))
    assert (tuned - plain).abs().max() > 1e-4  # the steps changed the network
    assert same_weights(net, original)

    net.train()  # now the forward passes also move BatchNorm's running statistics
    seen = []

    def watching_loss(moving, fixed):
        if not seen:
            seen.append(snapshot(net))
        return loss(moving, fixed)

    instance_optimize(net, watching_loss, *second, steps=2, lr=1e-2)
    assert all(torch.equal(value, original[name]) for name, value in seen[0].items())  # pair 2 starts fresh
    assert same_weights(net, original)

    def failing_loss(moving, fixed):
        if seen:
            seen.clear()
            return loss(moving, fixed)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        instance_optimize(net, failing_loss, *first, steps=2, lr=1e-2)
    assert same_weights(net, original)
    with pytest.raises(ValueError, match="steps"):
        instance_optimize(net, loss, *first, steps=-1)


def _gradicon_step(net, moving, fixed):
    from equireg.losses import LNCC, GradICONLoss

    torch.manual_seed(1)  # the loss's sample points
    net.zero_grad(set_to_none=True)
    loss = GradICONLoss(net, LNCC(2), 1.5)(moving, fixed)["loss"]
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), gradients, {name: b.clone() for name, b in net.named_buffers()}


def _sequential_unshared(monkeypatch):
    """GradICON's two directions as two calls of the network, each featurizing its own images."""
    import contextlib

    from equireg import losses

    monkeypatch.setattr(losses, "directions_batchable", lambda net: False)
    monkeypatch.setattr(losses, "features_shared", lambda net, groups=1: contextlib.nullcontext())


def _carl_pair():
    torch.manual_seed(0)
    net = methods.build("carl", 2, feature_channels=8).train()
    moving = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 37, 29), 3, 1, 1)
    fixed = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 37, 29), 3, 1, 1)
    return net, moving, fixed


def _assert_same_step(net, moving, fixed, ours, expected):
    """The loss and running statistics to float32 round-off, the gradients to summation order;
    returns the parameters whose gradient is analytically zero."""
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-6, atol=0)
    identity = identity_map(moving.shape[2:])
    zero = zero_gradient_parameters(net, lambda net: net(moving, fixed)(identity))
    assert_gradients_close(ours[1], expected[1], zero)
    for name in expected[2]:  # batch-norm running statistics, as after two separate passes
        torch.testing.assert_close(ours[2][name], expected[2][name], msg=name)
    return zero


def test_gradicon_shares_xi_features_between_directions_without_changing_the_step(monkeypatch):
    from equireg import losses

    net, moving, fixed = _carl_pair()
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []
    featurizer = carl.featurizer(net)
    featurizer.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))

    batched = _gradicon_step(net, moving, fixed)
    assert calls == [4]  # A and B once each, both directions in one batch (cat(A, B), then reused)
    net.load_state_dict(initial)
    monkeypatch.setattr(losses, "directions_batchable", lambda net: False)  # two calls, still sharing
    shared = _gradicon_step(net, moving, fixed)
    assert calls[1:] == [2, 2]  # A, then B; the second direction reuses both
    net.load_state_dict(initial)
    _sequential_unshared(monkeypatch)
    separate = _gradicon_step(net, moving, fixed)
    assert calls[3:] == [2] * 4  # moving and fixed, in each direction

    zero = _assert_same_step(net, moving, fixed, batched, separate)
    prefix = next(name for name, module in net.named_modules() if module is featurizer)
    assert any(name.startswith(prefix) for name in zero)  # its convolutions feed BatchNorms
    # two calls that share features compute the same numbers as two that do not
    assert torch.equal(shared[0], separate[0])
    assert_gradients_close(shared[1], separate[1], zero)  # equal up to the order of float32 sums
    for name in shared[2]:  # batch-norm running statistics, as after a second pass
        torch.testing.assert_close(shared[2][name], separate[2][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("method", ["gradicon", "carl"])
def test_gradicon_batches_both_directions_without_changing_the_step(monkeypatch, method):
    from equireg import losses, wrappers

    if method == "carl":
        net, moving, fixed = _carl_pair()
    else:
        torch.manual_seed(0)
        net = methods.build("gradicon", 2, levels=2).train()
        moving, fixed = torch.rand(2, 1, 37, 33), torch.rand(2, 1, 37, 33)
    with torch.no_grad():  # leave the identity: zero last layers would hide every other weight
        for module in net.modules():
            if isinstance(module, TallUNet2):
                module.lastConv.weight.normal_(0, 0.05)
    assert wrappers.directions_batchable(net)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    batched = _gradicon_step(net, moving, fixed)
    net.load_state_dict(initial)
    _sequential_unshared(monkeypatch)
    separate = _gradicon_step(net, moving, fixed)
    _assert_same_step(net, moving, fixed, batched, separate)

    # the test sees it when batch norm mixes the two directions' statistics
    import contextlib

    monkeypatch.setattr(losses, "directions_batchable", lambda net: True)
    monkeypatch.setattr(losses, "batch_norm_groups", lambda net, groups: contextlib.nullcontext())
    net.load_state_dict(initial)
    mixed = _gradicon_step(net, moving, fixed)
    with pytest.raises(AssertionError):
        _assert_same_step(net, moving, fixed, mixed, separate)


def test_only_wrapper_trees_without_other_state_batch_their_directions():
    from equireg import wrappers

    assert not wrappers.directions_batchable(torch.nn.Sequential())  # not a tree of wrappers
    dropout = DisplacementField(torch.nn.Sequential(torch.nn.Dropout(0.1)))
    assert not wrappers.directions_batchable(dropout)  # its draws depend on the batch
    assert wrappers.directions_batchable(TwoStep(Downsample(DisplacementField(TallUNet2(2))),
                                                 DisplacementField(TallUNet2(2))))
