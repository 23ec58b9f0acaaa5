"""Data for equireg: generated retina vessel masks and lung phantoms, CARL's warp-plus-shift
perturbations, readers for datasets users bring, and deterministic training batches.

Submodules: :mod:`~equireg.data.retina`, :mod:`~equireg.data.perturb`, :mod:`~equireg.data.lung`,
:mod:`~equireg.data.loaders`, :mod:`~equireg.data.datasets` (and ``io`` for image files); real volumes
with known motion: :mod:`~equireg.data.chest_ct` and :mod:`~equireg.data.breathing` (lung),
:mod:`~equireg.data.brain` and :mod:`~equireg.data.brain_pairs` (Colin27 + AAL), sharing
:mod:`~equireg.data.random_warps`. Only the finders of chest_ct and brain download, and only when
no configured or installed copy exists.
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
