"""Classical SimpleITK registration: it registers shifted and warped pairs, deterministically, and
picks mutual information for a multi-modal pair."""

from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from scipy import ndimage

import yaml

from baselines.classical import METRICS, Classical, build
from equireg import methods
from equireg.metrics import dice
from equireg.transforms import displacement_in_voxels, warp

SHAPE = (64, 56)
VESSEL = 0.5  # threshold of the vessel mask: above the disc (0.3), below the vessels


def _vessel_image(shape, seed=0):
    """A bright disc crossed by thin smooth lines: a crude retina."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.array(shape, dtype=float) / 2
    radius = np.sqrt(sum(((grid[d] - centre[d]) / (0.35 * shape[d])) ** 2 for d in range(2)))
    image = 0.3 * (radius < 1)
    for _ in range(6):
        point = centre + rng.uniform(-0.3, 0.3, 2) * shape
        angle = rng.uniform(0, np.pi)
        distance = (grid[0] - point[0]) * np.sin(angle) - (grid[1] - point[1]) * np.cos(angle)
        image = image + 0.7 * np.exp(-distance ** 2 / (2 * 1.2 ** 2)) * (radius < 1)
    return ndimage.gaussian_filter(image, 1.0)


def _shift_and_warp(image, shift, seed=1, amplitude=2.0):
    """``image`` translated by ``shift`` voxels and deformed by a smooth random field."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in image.shape], indexing="ij"))
    coordinates = [grid[d] - shift[d] + amplitude * ndimage.zoom(rng.normal(size=(4, 4)),
                                                                 [n / 4 for n in image.shape], order=3)
                   for d in range(2)]
    return ndimage.map_coordinates(image, coordinates, order=1, mode="constant")


def _tensor(array):
    return torch.tensor(array, dtype=torch.float32)[None, None]


@pytest.fixture(scope="module")
def pair():
    fixed = _vessel_image(SHAPE)
    return _tensor(_shift_and_warp(fixed, (6.0, -4.0))), _tensor(fixed)


@pytest.mark.parametrize("deformable", ["bspline", "demons"])
def test_registers_a_shifted_and_warped_pair(pair, deformable):
    moving, fixed = pair
    phi = methods.build("classical", 2, deformable=deformable)(moving, fixed)
    moved = warp(moving, phi.field(SHAPE))
    before = dice(moving[0, 0] > VESSEL, fixed[0, 0] > VESSEL)
    after = dice(moved[0, 0] > VESSEL, fixed[0, 0] > VESSEL)
    assert before < 0.6, f"the test pair is too easy (Dice before {before:.3f})"
    assert after > 0.95, f"Dice {before:.3f} -> {after:.3f}"


def test_is_deterministic_and_registers_each_batch_element(pair):
    moving, fixed = pair
    net = build(2, sampling_percentage=0.5)
    first = net(torch.cat([moving, fixed]), torch.cat([fixed, fixed])).field(SHAPE)
    second = net(torch.cat([moving, fixed]), torch.cat([fixed, fixed])).field(SHAPE)
    assert torch.equal(first, second)
    shift = displacement_in_voxels(first)
    # pair 0 was shifted by (6, -4) (plus a zero-mean warp); pair 1 is already aligned
    assert torch.allclose(shift[0].mean((1, 2)), torch.tensor([6.0, -4.0]), atol=1.0), shift[0].mean((1, 2))
    assert shift[1].abs().max() < 0.1


def test_3d_translation_is_recovered():
    grid = np.stack(np.meshgrid(*[np.arange(20.0)] * 3, indexing="ij"))
    blob = lambda c: np.exp(-sum((grid[d] - c[d]) ** 2 / (2 * s ** 2) for d, s in enumerate((3, 4, 2.5))))
    fixed = blob((10, 9, 11)) + 0.5 * blob((6, 12, 8))
    moving = blob((12, 8, 10)) + 0.5 * blob((8, 11, 7))  # fixed shifted by (2, -1, -1)
    phi = build(3, deformable="none", shrink_factors=(2, 1), smoothing_sigmas=(1, 0))(_tensor(moving), _tensor(fixed))
    shift = displacement_in_voxels(phi.field((20, 20, 20)))[0].mean((1, 2, 3))
    assert torch.allclose(shift, torch.tensor([2.0, -1.0, -1.0]), atol=0.2), shift


def test_has_no_parameters_and_rejects_bad_options():
    assert list(Classical(2).parameters()) == []
    with pytest.raises(ValueError, match="metric"):
        build(2, metric="mutual")
    with pytest.raises(ValueError, match="deformable"):
        build(2, deformable="syn")
    with pytest.raises(ValueError, match="shrink_factors"):
        build(2, shrink_factors=(4, 2), smoothing_sigmas=(1,))
    with pytest.raises(ValueError, match="dimension"):
        build(4)
    with pytest.raises(ValueError, match="seed"):
        build(2, seed=0)
    with pytest.raises(ValueError, match="threads"):
        build(2, threads=0)
    with pytest.raises(ValueError, match=r"\[B, 1, \*spatial\]"):
        build(2)(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))


# --- the similarity metric: "auto" picks Mattes MI for another modality, correlation for one --------

SHIFT = (3.5, -2.25)
LARGE_SHIFT = (11.5, -9.25)  # a fifth of the image: beyond what the correlation affine recovers here


def _head(shape=(64, 56), size=1.0):
    """Tissue labels of a crude head slice: 1 scalp, 2 CSF (also a ventricle), 3 grey, 4 white matter;
    ``size`` scales the head within the canvas."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.array(shape) / 2

    def inside(ry, rx, dy=0.0, dx=0.0):
        return ((grid[0] - centre[0] - dy) / ry) ** 2 + ((grid[1] - centre[1] - dx) / rx) ** 2 < 1

    labels = np.zeros(shape, int)
    for label, ry, rx, dy, dx in [(1, 0.45, 0.42, 0, 0), (2, 0.40, 0.37, 0, 0), (3, 0.35, 0.32, 0, 0),
                                  (4, 0.18, 0.10, -6, -8), (4, 0.15, 0.12, 8, 7), (2, 0.06, 0.05, 0, 4)]:
        labels[inside(ry * shape[0] * size, rx * shape[1] * size, dy * size, dx * size)] = label
    return labels


T1 = (0.0, 0.9, 0.15, 0.5, 0.75)  # background, scalp, CSF, grey, white matter


def _head_pair(moving_intensities, shift=SHIFT, size=1.0):
    """(moving, fixed): a T1-like fixed slice and a moving one with ``moving_intensities`` per tissue,
    shifted by ``shift``: a voxel of the moving image at i + shift shows what the fixed image shows
    at i, so phi(x) = x + shift (voxels)."""
    labels = _head(size=size)
    fixed = ndimage.gaussian_filter(np.array(T1)[labels], 1.0)
    moving = ndimage.gaussian_filter(np.array(moving_intensities)[labels], 1.0)
    moving = ndimage.shift(moving, shift, order=3, mode="nearest")
    return _tensor(moving), _tensor(fixed)


def _mean_shift(net, moving, fixed):
    return displacement_in_voxels(net(moving, fixed).field(fixed.shape[2:]))[0].mean((1, 2)).numpy()


# Proton-density-like tissue intensities: remapped non-monotonically from T1 (CSF dark -> brightest,
# scalp bright -> darker). With a dark background in both modalities and room around the head, as in
# ITK's BrainT1SliceBorder20 / BrainProtonDensitySlice, the object-background contrast is linear: a
# test of linearity took such a pair for one modality. A bright PD background is the easier case.
@pytest.mark.parametrize("intensities, size, shift", [
    ((0.0, 0.3, 1.0, 0.7, 0.5), 0.8, SHIFT),
    ((0.0, 0.1, 1.0, 0.8, 0.3), 1.0, LARGE_SHIFT),
    ((0.5, 0.1, 1.0, 0.8, 0.3), 1.0, SHIFT)], ids=["dark background", "dark background, large offset",
                                                  "bright background"])
def test_auto_picks_mutual_information_on_a_multimodal_pair(intensities, size, shift):
    moving, fixed = _head_pair(intensities, shift, size)
    errors = {}
    for metric in ("correlation", "mattes", "auto"):
        net = build(2, metric=metric, deformable="none")
        errors[metric] = np.abs(_mean_shift(net, moving, fixed) - shift).max()
        if metric == "auto":
            assert net.chosen_metrics == ["mattes"]
    assert errors["correlation"] > 1.0, f"the pair does not defeat correlation: {errors}"
    assert errors["mattes"] < 0.05 and errors["auto"] < 0.05, errors
    assert Classical(2).metric == "auto"  # the default


@pytest.mark.parametrize("shift", [SHIFT, LARGE_SHIFT])
@pytest.mark.parametrize("intensities", [T1, tuple(1 - v for v in T1), tuple(0.2 + 0.5 * v for v in T1)],
                         ids=["same", "inverted", "gain and offset"])
def test_auto_keeps_correlation_on_one_modality_at_any_offset(intensities, shift):
    moving, fixed = _head_pair(intensities, shift)
    auto, pinned = build(2, deformable="none"), build(2, metric="correlation", deformable="none")
    assert torch.equal(auto(moving, fixed).field(fixed.shape[2:]), pinned(moving, fixed).field(fixed.shape[2:]))
    assert auto.chosen_metrics == ["correlation"]


def test_auto_keeps_correlation_on_the_workflows_pairs():
    """Retina vessel maps and the lung phantom are of one modality: "auto" gives correlation's result."""
    from equireg.data.lung import lung_pair, preprocess_ct
    from equireg.data.perturb import make_pair
    from equireg.data.retina import generate_vessel_mask

    retina = make_pair(generate_vessel_mask(200_000), shifted=True, seed=0, pool=8, with_map=False)
    lung = lung_pair((0, 0), shape=(24, 24, 24), landmarks=4)
    pairs = [(retina.moving, retina.fixed), (preprocess_ct(lung.moving, lung.moving_mask),
                                             preprocess_ct(lung.fixed, lung.fixed_mask))]
    for moving, fixed in pairs:
        moving, fixed = _tensor(moving), _tensor(fixed)
        auto = build(fixed.dim() - 2, deformable="none", shrink_factors=(2, 1), smoothing_sigmas=(1, 0))
        pinned = build(fixed.dim() - 2, metric="correlation", deformable="none", shrink_factors=(2, 1),
                       smoothing_sigmas=(1, 0))
        shape = fixed.shape[2:]
        assert torch.equal(auto(moving, fixed).field(shape), pinned(moving, fixed).field(shape))
        assert auto.chosen_metrics == ["correlation"]


def test_presets_pin_correlation_and_the_schema_checks_the_metric():
    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    jsonschema.validate(config, schema)
    assert schema["$defs"]["classical_settings"]["properties"]["options"]["properties"]["metric"]["enum"] \
        == list(METRICS)
    for name, preset in config["presets"].items():
        for section in (preset["training"], preset["lung"].get("training", {})):
            if "classical" in section:
                assert section["classical"]["options"]["metric"] == "correlation", name
    config["presets"]["smoke"]["training"]["classical"]["options"]["metric"] = "mutual"
    with pytest.raises(jsonschema.ValidationError, match="mutual"):
        jsonschema.validate(config, schema)


def test_progress_bar_counts_iterations_on_stderr(pair, capsys):
    moving, fixed = pair
    net = build(2, deformable="none", affine_iterations=5)
    net.progress = True
    net(moving, fixed)
    error = capsys.readouterr().err
    assert "classical affine (correlation)" in error and "it" in error
