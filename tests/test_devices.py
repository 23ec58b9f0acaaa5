"""Device and precision settings: resolution, errors, and what stays float32."""

import pytest
import torch

from equireg import devices


def test_auto_is_cuda_only_when_available_and_cpu_is_always_there():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == expected
    assert devices.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        devices.resolve_device("cuda")


def test_unknown_settings_are_errors():
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda"):
        devices.resolve_device("tpu")
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16"):
        devices.resolve_precision("fp16", torch.device("cpu"))


def test_auto_precision_follows_native_bf16():
    cpu = torch.device("cpu")
    assert devices.resolve_precision("auto", cpu) == ("bf16" if devices.native_bf16(cpu) else "fp32")
    assert devices.resolve_precision("fp32", cpu) == "fp32" and devices.resolve_precision("bf16", cpu) == "bf16"


def test_bf16_autocasts_products_and_fp32_does_not():
    cpu = torch.device("cpu")
    a = torch.rand(4, 4)
    with devices.autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with devices.autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32


# --- what runs in bf16 -------------------------------------------------------------------------------

def _gradicon_terms(net, moving, fixed):
    from equireg.losses import LNCC, GradICONLoss

    torch.manual_seed(3)  # the loss's sample points
    return GradICONLoss(net, LNCC(2), 1.5)(moving, fixed)


def test_bf16_leaves_coordinates_losses_and_finite_differences_in_float32():
    """VoxelMorph with a zeroed flow layer predicts exactly zero displacement in either precision,
    though its U-Net runs in bf16, so every GradICON term must come out bit-equal: any coordinate,
    LNCC or finite-difference arithmetic done in bf16 (8-bit mantissa: steps of 4e-3 near 1, above
    the 1e-3 difference step) would differ. (tallUNet2, GradICON's own step, never runs in bf16.)"""
    from equireg import methods

    torch.manual_seed(0)
    net = methods.build("voxelmorph", 2).train()
    torch.nn.init.zeros_(net.flow.weight)
    torch.nn.init.zeros_(net.flow.bias)
    moving, fixed = torch.rand(2, 1, 48, 40), torch.rand(2, 1, 48, 40)
    expected = _gradicon_terms(net, moving, fixed)
    devices.set_precision(net, "bf16")
    assert net.precision == "bf16"
    got = _gradicon_terms(net, moving, fixed)
    assert {k: v.dtype for k, v in got.items()} == {k: torch.float32 for k in expected}
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@pytest.mark.parametrize("method, options, converted", [("gradicon", {"levels": 1}, False), ("voxelmorph", {}, True),
                                                        ("carl", {"feature_channels": 8}, True)])
def test_bf16_networks_stay_close_to_fp32_and_return_float32(method, options, converted):
    """VoxelMorph and Xi's featurizer run in bf16; tallUNet2 stays fp32 (bf16 made it slower)."""
    from equireg import methods
    from equireg.transforms import identity_map

    torch.manual_seed(0)
    net = methods.build(method, 2, **options).eval()
    for module in net.modules():  # non-zero last layers: a displacement to compare
        for last in ("lastConv", "flow"):
            if hasattr(module, last):
                torch.nn.init.normal_(getattr(module, last).weight, std=0.05)
    moving = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 49, 37), 5, 1, 2)
    fixed = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 49, 37), 5, 1, 2)
    identity = identity_map((49, 37))
    with torch.no_grad():
        reference = net(moving, fixed)(identity) - identity
        devices.set_precision(net, "bf16")
        field = net(moving, fixed)(identity)
    displacement = field - identity
    assert field.dtype == torch.float32 and reference.abs().max() > 1e-4
    # bf16 products carry ~2^-8 relative error per layer; a wrong layout or dtype would be far off
    assert (displacement - reference).abs().max() <= 0.1 * reference.abs().max()
    assert torch.equal(displacement, reference) != converted  # bf16 ran exactly where it should


def test_training_on_an_explicit_device_and_precision_records_them(tmp_path):
    from baselines import gradicon
    from equireg import training

    torch.manual_seed(0)
    net = gradicon.build(2, levels=1)
    pairs = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 49, 37), 3, 1, 1)
    stages = [training.Stage("gradicon", 3, 1e-3, 1.5, {"name": "lncc", "sigma": 2})]
    rows = training.train(net, stages, lambda step: (pairs[:2], pairs[2:]), tmp_path / "run", progress=False,
                          device=torch.device("cpu"), precision="bf16")
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)
    training.save_model(tmp_path / "model.pt", net, "gradicon", 2, {"levels": 1}, [49, 37], "bf16")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["trained_with"] == {"device": "cpu", "precision": "bf16"}
    loaded, _ = training.load_model(tmp_path / "model.pt", "gradicon", 2, device="cpu", precision="fp32")
    assert devices.of(loaded).type == "cpu" and not loaded.training
    assert all(m.precision == "fp32" for m in loaded.modules() if hasattr(m, "precision"))


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path):
    from baselines import gradicon
    from equireg import training

    net = gradicon.build(2, levels=1)
    good = torch.rand(2, 1, 49, 37)
    bad = good.clone()
    bad[0, 0, 3, 3] = float("nan")
    stages = [training.Stage("gradicon", 4, 1e-3, 1.5, {"name": "lncc", "sigma": 2})]
    with pytest.raises(FloatingPointError, match="step 3.*not finite"):
        training.train(net, stages, lambda step: (bad if step == 2 else good, good), tmp_path, progress=False,
                       checkpoint_every=1)
    assert training.load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # nothing corrupt was saved
