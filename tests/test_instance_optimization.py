"""Instance optimisation as the evaluation variant "method (IO)": it lowers the training loss on the
pair, works inside evaluation code that runs under no_grad, and leaves the weights bit-equal."""

import numpy as np
import torch

from equireg import training
from equireg.experiments.evaluation import first_pairs, instance_optimization, io_columns, register_pairs
from equireg.instance_optimization import InstanceOptimization

STAGE = {"loss": "gradicon", "steps": 1, "lr": 1e-3, "lmbda": 0.5, "similarity": {"name": "ssd"}}


def _blob(shift):
    grid = np.stack(np.meshgrid(np.arange(24.0), np.arange(24.0), indexing="ij"))
    return np.exp(-((grid[0] - 12 - shift[0]) ** 2 + (grid[1] - 12 - shift[1]) ** 2) / 18).astype(np.float32)


def _pairs(count=3):
    moving = np.stack([_blob((2, -2 + k))[None] for k in range(count)])
    fixed = np.stack([_blob((0, 0))[None]] * count)
    return {"moving": moving, "fixed": fixed, "spacing": np.ones(2, dtype=np.float32)}


def test_io_lowers_the_training_loss_on_the_pair_and_restores_the_weights():
    net, _ = training.load_model(None, "gradicon", 2, {"levels": 1})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimization = InstanceOptimization.of(net, training.Stage.from_config(STAGE), steps=15, lr=1e-3)
    seen = []

    def watched(moving, fixed):
        terms = optimization.loss(moving, fixed)
        seen.append(float(terms["loss"].detach()))
        return terms

    pair = [torch.from_numpy(a[:1]) for a in (_pairs()["moving"], _pairs()["fixed"])]
    InstanceOptimization(watched, 15, 1e-3).register(net, *pair)
    assert seen[-1] < 0.5 * seen[0], seen
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_evaluation_registers_each_pair_after_its_own_io_even_under_no_grad():
    pairs = _pairs()
    net, _ = training.load_model(None, "gradicon", 2, {"levels": 1})
    io = {"steps": 10, "lr": 1e-3, "pairs": 2}
    optimization = instance_optimization(net, {"stages": [STAGE]}, io)
    chosen = first_pairs(pairs, io["pairs"])
    assert len(chosen["moving"]) == 2 and chosen["spacing"].shape == (2,)  # a per-set array is kept
    with torch.no_grad():
        tuned = register_pairs(net, chosen["moving"], chosen["fixed"], optimization=optimization)
    plain = register_pairs(net, chosen["moving"], chosen["fixed"])
    # each pair alone: the same pairs again give the same maps (weights restored, noise seeded by pair)
    again = register_pairs(net, chosen["moving"], chosen["fixed"], optimization=optimization)
    assert torch.equal(tuned, again)
    assert (tuned - plain).abs().max() > 1e-3
    assert io_columns(io) == {"io_steps": 10, "io_lr": 1e-3} and io_columns(None) == {}
    assert instance_optimization(net, {"stages": [STAGE]}, None) is None
