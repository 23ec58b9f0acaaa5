"""Classical iterative registration with SimpleITK, as an equireg registration network.

Per image pair: centre-of-mass (image moments) initialisation, an affine stage, then a B-spline
(free-form deformation) or a demons stage. No training: the module has no parameters, and
``forward(moving, fixed)`` optimises each batch element from scratch. The result is returned in
equireg's convention, a dense displacement in [0, 1] units on the fixed grid.

Images are registered in voxel space (origin 0, spacing 1, identity direction) because tensors
carry no geometry. Runs are deterministic: metrics use every voxel (or a seeded random sample)
and ITK runs single-threaded by default (``threads=1``), so sums are always accumulated in the
same order.

The similarity metric defaults to ``"auto"``: correlation when the two images are of one
modality (their intensities are linearly related once aligned), Mattes mutual information when
they are not (T1 against proton density, CT against MR): correlation assumes a linear relation
and pulls a multi-modal pair off by pixels, mutual information does not. ``"auto"`` runs the affine
stage with both metrics and lets mutual information, which holds for either kind of pair, judge
the two alignments: Mattes' is taken only when it carries clearly more information
(:data:`INFORMATION_GAIN`), so on one-modality pairs ``"auto"`` gives exactly ``"correlation"``'s
result; :attr:`Classical.chosen_metrics` records the choice per pair. (The demons stage compares
intensities directly, so it assumes one modality whatever the metric; use B-spline across modalities.)
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from equireg.transforms import DisplacementTransform, Transform, identity_map
from equireg.wrappers import RegistrationNetwork

METRICS = ("auto", "mean_squares", "correlation", "mattes", "neighborhood_correlation")
# "auto" takes the Mattes affine when its mutual information is this factor above the correlation
# affine's. Measured: one modality 0.99-1.06 (generated vessel-map pairs highest: their affine fit
# is loose), ITK's T1 / proton-density example slices 1.34-1.68, synthetic T1 / PD heads 1.1-4.
# A test of linearity (r^2 against eta^2) at the correlation alignment took T1 / PD for one
# modality: the object-background contrast is linear in almost any two modalities.
INFORMATION_GAIN = 1.1
DEFORMABLE = ("bspline", "demons", "none")


def _set_metric(method: sitk.ImageRegistrationMethod, metric: str, bins: int, radius: int) -> None:
    if metric == "mean_squares":
        method.SetMetricAsMeanSquares()
    elif metric == "correlation":
        method.SetMetricAsCorrelation()
    elif metric == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    else:
        method.SetMetricAsANTSNeighborhoodCorrelation(radius)


class Classical(RegistrationNetwork):
    """SimpleITK registration of each pair; see the module docstring.

    Options: ``metric`` (one of :data:`METRICS`; ``"auto"``: see the module docstring), ``deformable`` (``"bspline"``, ``"demons"`` or
    ``"none"`` for affine only), ``iterations`` (of the deformable stage, per level),
    ``affine_iterations`` (per level), ``mesh_size`` (B-spline control-grid cells per axis), ``shrink_factors`` and
    ``smoothing_sigmas`` (voxels; the multi-resolution pyramid of both iterative stages),
    ``sampling_percentage`` (``None``: every voxel; else a random sample drawn with ``seed``, a
    positive integer: SimpleITK takes 0 to mean "seed from the clock"),
    ``demons_smoothing`` (standard deviation of the demons field smoothing, voxels), ``bins``
    (Mattes histogram), ``radius`` (neighbourhood correlation) and ``threads`` (ITK threads of the
    registration; more than one may change the last bits of the result). ``progress = True`` shows
    a tqdm bar of the optimiser's iterations on stderr.
    """

    def __init__(self, dimension: int, metric: str = "auto", deformable: str = "bspline",
                 affine_iterations: int = 100, iterations: int = 20, mesh_size: int = 8,
                 shrink_factors: Sequence[int] = (4, 2, 1), smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
                 sampling_percentage: float | None = None, seed: int = 1, demons_smoothing: float = 1.5,
                 bins: int = 32, radius: int = 2, threads: int = 1):
        super().__init__()
        if dimension not in (2, 3):
            raise ValueError(f"classical registration needs dimension 2 or 3, got {dimension}")
        if metric not in METRICS:
            raise ValueError(f"unknown classical metric {metric!r}; known: {', '.join(METRICS)}")
        if deformable not in DEFORMABLE:
            raise ValueError(f"unknown classical deformable stage {deformable!r}; known: {', '.join(DEFORMABLE)}")
        if len(shrink_factors) != len(smoothing_sigmas) or not shrink_factors:
            raise ValueError(f"shrink_factors {list(shrink_factors)} and smoothing_sigmas "
                             f"{list(smoothing_sigmas)} must be non-empty and of equal length")
        if sampling_percentage is not None and not 0 < sampling_percentage <= 1:
            raise ValueError(f"sampling_percentage must be in (0, 1], got {sampling_percentage}")
        if seed < 1:
            raise ValueError(f"seed must be >= 1 (SimpleITK reads 0 as 'seed from the clock'), got {seed}")
        if min(affine_iterations, iterations, mesh_size, threads) < 1:
            raise ValueError("affine_iterations, iterations, mesh_size and threads must be >= 1")
        self.dimension = dimension
        self.metric, self.deformable = metric, deformable
        self.affine_iterations, self.iterations = affine_iterations, iterations
        self.mesh_size = mesh_size
        self.shrink_factors = [int(f) for f in shrink_factors]
        self.smoothing_sigmas = [float(s) for s in smoothing_sigmas]
        self.sampling_percentage, self.seed = sampling_percentage, seed
        self.demons_smoothing, self.bins, self.radius = demons_smoothing, bins, radius
        self.threads, self.progress = threads, False
        self.chosen_metrics: list[str] = []  # the metric used for each pair of the last forward
        self._bar: tqdm | None = None

    def _observe(self, process: sitk.ImageRegistrationMethod | sitk.ProcessObject, stage: str) -> None:
        if self._bar is not None:
            bar = self._bar
            process.AddCommand(sitk.sitkStartEvent, lambda: bar.set_description(f"classical {stage}"))
            process.AddCommand(sitk.sitkIterationEvent, lambda: bar.update())

    def _method(self, metric: str) -> sitk.ImageRegistrationMethod:
        method = sitk.ImageRegistrationMethod()
        method.SetNumberOfThreads(self.threads)
        _set_metric(method, metric, self.bins, self.radius)
        if self.sampling_percentage is None:
            method.SetMetricSamplingStrategy(method.NONE)
        else:
            method.SetMetricSamplingStrategy(method.RANDOM)
            method.SetMetricSamplingPercentage(self.sampling_percentage, self.seed)
        method.SetShrinkFactorsPerLevel(self.shrink_factors)
        method.SetSmoothingSigmasPerLevel(self.smoothing_sigmas)
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        method.SetInterpolator(sitk.sitkLinear)
        return method

    def _affine(self, fixed: sitk.Image, moving: sitk.Image, metric: str) -> sitk.Transform:
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.AffineTransform(self.dimension),
            sitk.CenteredTransformInitializerFilter.MOMENTS)
        method = self._method(metric)
        self._observe(method, f"affine ({metric})")
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-4, numberOfIterations=self.affine_iterations,
            gradientMagnitudeTolerance=1e-8)
        method.SetOptimizerScalesFromIndexShift()
        method.SetInitialTransform(initial, inPlace=True)
        method.Execute(fixed, moving)
        return initial

    def _bspline(self, fixed: sitk.Image, moving: sitk.Image, affine: sitk.Transform, metric: str) -> sitk.Transform:
        bspline = sitk.BSplineTransformInitializer(fixed, [self.mesh_size] * self.dimension, order=3)
        method = self._method(metric)
        self._observe(method, f"B-spline ({metric})")
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                                    numberOfIterations=self.iterations,
                                    maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=1000,
                                    costFunctionConvergenceFactor=1e7)
        method.SetMovingInitialTransform(affine)
        method.SetInitialTransform(bspline, inPlace=True)
        method.Execute(fixed, moving)
        return bspline

    def _demons(self, fixed: sitk.Image, moving: sitk.Image, affine: sitk.Transform) -> sitk.Transform:
        moved = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, 0.0)
        field = sitk.Image(fixed.GetSize(), sitk.sitkVectorFloat64, self.dimension)
        field.CopyInformation(fixed)
        for shrink, sigma in zip(self.shrink_factors, self.smoothing_sigmas):
            demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
            demons.SetNumberOfThreads(self.threads)
            self._observe(demons, f"demons (level {shrink})")
            demons.SetNumberOfIterations(self.iterations)
            demons.SetStandardDeviations(self.demons_smoothing)
            demons.SmoothDisplacementFieldOn()
            level_fixed, level_moved = (_shrink(image, shrink, sigma) for image in (fixed, moved))
            initial = sitk.Resample(field, level_fixed, sitk.Transform(), sitk.sitkLinear, 0.0,
                                    field.GetPixelID())
            level_field = demons.Execute(level_fixed, level_moved, initial)
            field = sitk.Resample(level_field, fixed, sitk.Transform(), sitk.sitkLinear, 0.0,
                                  level_field.GetPixelID())
        return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))

    def register(self, moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """Register one pair of arrays (``[*S]``); return ``phi`` on the fixed grid, ``[D, *S_fixed]``,
        in the moving image's [0, 1] coordinates."""
        fixed_image = sitk.GetImageFromArray(fixed.astype(np.float32))
        moving_image = sitk.GetImageFromArray(moving.astype(np.float32))
        metric = "correlation" if self.metric == "auto" else self.metric
        affine = self._affine(fixed_image, moving_image, metric)
        if self.metric == "auto":
            mattes = self._affine(fixed_image, moving_image, "mattes")
            if (mutual_information(fixed_image, moving_image, mattes, self.bins)
                    > INFORMATION_GAIN * mutual_information(fixed_image, moving_image, affine, self.bins)):
                metric, affine = "mattes", mattes
        self.chosen_metrics.append(metric)
        transform: sitk.Transform = affine
        if self.deformable == "bspline":
            transform = sitk.CompositeTransform([affine, self._bspline(fixed_image, moving_image, affine, metric)])
        elif self.deformable == "demons":
            transform = sitk.CompositeTransform([affine, self._demons(fixed_image, moving_image, affine)])
        to_field = sitk.TransformToDisplacementFieldFilter()
        to_field.SetReferenceImage(fixed_image)
        to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
        displacement = sitk.GetArrayFromImage(to_field.Execute(transform))  # [*S, D], xyz order
        grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in fixed.shape], indexing="ij"))
        moving_index = grid + np.moveaxis(displacement[..., ::-1], -1, 0)
        scale = np.array([max(n - 1, 1) for n in moving.shape], dtype=np.float64)
        return moving_index / scale.reshape(-1, *[1] * self.dimension)

    @torch.no_grad()
    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:
        if moving.dim() != self.dimension + 2 or fixed.dim() != self.dimension + 2 \
                or moving.shape[:2] != fixed.shape[:2] or fixed.shape[1] != 1:
            raise ValueError(f"classical {self.dimension}-D registration needs moving and fixed of shape "
                             f"[B, 1, *spatial] with equal batch sizes; got moving {tuple(moving.shape)}, "
                             f"fixed {tuple(fixed.shape)}")
        self.chosen_metrics = []
        levels = len(self.shrink_factors)
        total = levels * (self.affine_iterations + (self.iterations if self.deformable != "none" else 0))
        # an upper bound: optimisers may converge before their last iteration
        with tqdm(total=total * len(moving), disable=not self.progress, file=sys.stderr, unit="it",
                  desc="classical") as bar:
            self._bar = bar if self.progress else None
            try:
                maps = [self.register(m[0].double().cpu().numpy(), f[0].double().cpu().numpy())
                        for m, f in zip(moving, fixed)]
            finally:
                self._bar = None
        phi = torch.as_tensor(np.stack(maps), dtype=fixed.dtype, device=fixed.device)
        return DisplacementTransform(phi - identity_map(fixed.shape[2:], fixed.device, fixed.dtype))


def mutual_information(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, bins: int = 32) -> float:
    """Mattes mutual information (nats) of ``fixed`` and ``moving`` mapped by ``transform``, over every
    voxel of ``fixed`` that maps inside ``moving``."""
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)  # one summation order: the same value every time
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    return -method.MetricEvaluate(fixed, moving)  # ITK minimises the negative


def _shrink(image: sitk.Image, factor: int, sigma: float) -> sitk.Image:
    """Smooth (sigma in voxels) and subsample by ``factor``, keeping the physical extent."""
    if sigma > 0:
        image = sitk.SmoothingRecursiveGaussian(image, sigma * np.asarray(image.GetSpacing()).min())
    return sitk.Shrink(image, [factor] * image.GetDimension()) if factor > 1 else image


def build(dimension: int, **options) -> Classical:
    """The registry's builder: ``Classical(dimension, **options)``."""
    return Classical(dimension, **options)
