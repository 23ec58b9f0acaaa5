"""Short trainings learn: GradICON (matched against upstream) and CARL lower held-out error."""

import numpy as np
import pytest
import torch

from baselines import gradicon
from equireg import methods, training
from equireg.data.datasets import PairBatches
from equireg.data.perturb import retina_dataset
from equireg.data.retina import generate_vessel_mask
from equireg.losses import LNCC, GradICONLoss
from equireg.transforms import warp


@pytest.fixture(scope="module")
def vessel_pairs():
    """Warped, not-shifted vessel pairs at 49x35: 16 for training, 4 held out."""
    train = retina_dataset([generate_vessel_mask(s) for s in (1, 2)], "none", 4, seed=1, pool=16)
    test = retina_dataset([generate_vessel_mask(3)], "none", 2, seed=2, pool=16)
    return train, test


def _heldout_similarity(net, test):
    net.eval()
    with torch.no_grad():
        moving, fixed = torch.from_numpy(test.moving), torch.from_numpy(test.fixed)
        return float(LNCC(4)(warp(moving, net(moving, fixed).field(moving.shape[2:])), fixed))


def _train_steps(net, loss, batches, steps, lr):
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    history = []
    for step in range(steps):
        moving, fixed = batches(step)
        optimizer.zero_grad()
        value = loss(moving, fixed)
        total = value["loss"] if isinstance(value, dict) else value.all_loss
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    return history


@pytest.mark.slow
@pytest.mark.peers
def test_gradicon_training_lowers_heldout_error_and_matches_upstream(vessel_pairs):
    icon = pytest.importorskip("icon_registration")
    networks = pytest.importorskip("icon_registration.networks")
    icon_losses = pytest.importorskip("icon_registration.losses")
    torch.set_num_threads(1)
    train, test = vessel_pairs
    batches = PairBatches(train.moving, train.fixed, 4, seed=0)

    torch.manual_seed(0)
    ours = gradicon.build(2, levels=2)
    upstream_net = icon.TwoStepRegistration(
        icon.DownsampleRegistration(icon.FunctionFromVectorField(networks.tallUNet2(dimension=2)), dimension=2),
        icon.FunctionFromVectorField(networks.tallUNet2(dimension=2)))
    upstream_net.load_state_dict(ours.state_dict(), strict=True)
    before = _heldout_similarity(ours, test)

    torch.manual_seed(1)
    ours_history = _train_steps(ours, GradICONLoss(ours, LNCC(4), 1.5), batches, 200, 1e-3)
    upstream = icon_losses.GradientICON(upstream_net, icon_losses.LNCC(sigma=4), 1.5)
    upstream.assign_identity_map((4, 1, *train.moving.shape[2:]))
    torch.manual_seed(1)
    upstream_history = _train_steps(upstream, upstream, batches, 200, 1e-3)

    after = _heldout_similarity(ours, test)
    print(f"held-out LNCC loss {before:.4f} -> {after:.4f}; final training loss ours "
          f"{np.mean(ours_history[-20:]):.4f} upstream {np.mean(upstream_history[-20:]):.4f}")
    assert after < 0.9 * before
    assert np.mean(ours_history[-20:]) == pytest.approx(np.mean(upstream_history[-20:]), rel=0.1)


@pytest.mark.slow
def test_short_carl_training_lowers_heldout_error(vessel_pairs, tmp_path):
    torch.set_num_threads(1)
    train, test = vessel_pairs
    training.seed_everything(0)
    net = methods.build("carl", 2, feature_channels=16)
    before = _heldout_similarity(net, test)
    stages = [training.Stage("diffusion", 60, 1e-3, 1.5, module="netPhi")]
    training.train(net, stages, PairBatches(train.moving, train.fixed, 4, seed=0), tmp_path, progress=False)
    after = _heldout_similarity(net, test)
    print(f"CARL held-out LNCC loss {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before
