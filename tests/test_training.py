"""The training loop: it learns, it is deterministic, and it resumes exactly after a crash."""

import pytest
import torch
from torch import nn

from equireg import training
from equireg.transforms import identity_map, translation, warp
from equireg.wrappers import DisplacementField


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))

    def forward(self, moving, fixed):
        return self.conv(torch.cat([moving, fixed], 1)) / 10


def _batches(step):
    generator = torch.Generator().manual_seed(step)
    fixed = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 24, 24, generator=generator), 3, 1, 1)
    shift = (torch.rand(2, generator=generator) - 0.5) * 0.1
    moving = warp(fixed, translation(-shift)(identity_map((24, 24))))
    return moving, fixed


STAGES = [training.Stage("diffusion", 4, 1e-3, 0.1, {"name": "ssd"}),
          training.Stage("gradicon", 4, 1e-3, 0.5, {"name": "ssd"})]


def _net():
    torch.manual_seed(0)
    return DisplacementField(_TinyNet())


def test_training_is_deterministic_and_logs_every_term(tmp_path):
    first, second = _net(), _net()
    rows = training.train(first, STAGES, _batches, tmp_path / "a", seed=1, checkpoint_every=3, progress=False)
    training.train(second, STAGES, _batches, tmp_path / "b", seed=1, checkpoint_every=3, progress=False)
    assert len(rows) == 8 and {"loss", "similarity", "stage", "step"} <= set(rows[0])
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)
    # checkpoint and model files are byte-identical too (no temporary file name inside)
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() == (tmp_path / "b" / "checkpoint.pt").read_bytes()
    for name, net in (("a", first), ("b", second)):
        training.save_model(tmp_path / name / "model.pt", net, "gradicon", 2, {}, [24, 24])
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


@pytest.mark.parametrize("crash_at", [2, 4, 5, 7])
def test_resume_after_crash_gives_the_uninterrupted_result(tmp_path, crash_at):
    reference = _net()
    training.train(reference, STAGES, _batches, tmp_path / "ref", seed=1, checkpoint_every=2, progress=False)

    def crashing(step):
        if step == crash_at:
            raise KeyboardInterrupt
        return _batches(step)

    with pytest.raises(KeyboardInterrupt):
        training.train(_net(), STAGES, crashing, tmp_path / "run", seed=1, checkpoint_every=2, progress=False)
    resumed = _net()
    training.train(resumed, STAGES, _batches, tmp_path / "run", seed=1, checkpoint_every=2, progress=False)
    for p, q in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert (tmp_path / "ref" / "log.csv").read_text() == (tmp_path / "run" / "log.csv").read_text()


def test_model_file_round_trip_and_errors(tmp_path, monkeypatch):
    from equireg import methods
    monkeypatch.setitem(methods.METHODS, "tiny", methods.Method(f"{__name__}:_build_tiny"))
    net = _build_tiny(2)
    training.save_model(tmp_path / "m.pt", net, "tiny", 2, {}, [24, 24])
    loaded, info = training.load_model(tmp_path / "m.pt", "tiny", 2)
    assert info["input_shape"] == [24, 24] and not loaded.training
    with pytest.raises(ValueError, match="method 'tiny', not 'gradicon'"):
        training.load_model(tmp_path / "m.pt", "gradicon", 2)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: corrupt"):
        training.load_model(tmp_path / "bad.pt", "tiny", 2)


def _build_tiny(dimension, **options):
    return _net()
