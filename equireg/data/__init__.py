"""Data for equireg: generated retina vessel masks and lung phantoms, CARL's warp-plus-shift
perturbations, readers for datasets users bring, and deterministic training batches.

Submodules: :mod:`~equireg.data.retina`, :mod:`~equireg.data.perturb`, :mod:`~equireg.data.lung`,
:mod:`~equireg.data.loaders`, :mod:`~equireg.data.datasets` (and ``io`` for image files). Nothing
here downloads anything.
"""

from equireg.data.datasets import PairBatches, load_arrays, save_arrays
from equireg.data.lung import LungPair, lung_pair, lung_phantom, prepare_lung_ct, preprocess_ct
from equireg.data.perturb import Pair, PairSet, make_pair, retina_dataset, shift_sweep_pairs
from equireg.data.retina import generate_vessel_mask, skimage_retina_vessels, vessel_statistics

__all__ = [
    "LungPair", "Pair", "PairBatches", "PairSet", "generate_vessel_mask", "load_arrays", "lung_pair",
    "lung_phantom", "make_pair", "prepare_lung_ct", "preprocess_ct", "retina_dataset", "save_arrays",
    "shift_sweep_pairs", "skimage_retina_vessels", "vessel_statistics",
]
