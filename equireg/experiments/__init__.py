"""The benchmark's experiments as library functions; workflow scripts are thin calls into these.

One module per concern: :mod:`.jobs` (job setup and pair-set files), :mod:`.pairs` (the
data sets), :mod:`.training_runs`, :mod:`.evaluation`, :mod:`.brain_evaluation` (the brain shift
sweep) and :mod:`.analyses` (shift sweep, equivariance, landscape, 1-D toy).

Data sets are ``.npz`` files of float32 arrays ``moving``, ``fixed``, ``moving_label``,
``fixed_label`` (``[N, 1, *S]``), optionally ``coordinates`` (ground truth ``[N, D, *S]``) and,
for lung, ``fixed_landmarks`` / ``moving_landmarks`` (``[N, K, D]`` voxels, array-axis order) and
``spacing`` (``[D]`` mm). Result files hold no timings, so a fixed seed gives identical bytes.
"""

from equireg.experiments.brain_evaluation import evaluate_brain
from equireg.experiments.analyses import EQUIVARIANCE_STRIDE, equivariance, landscape, shift_sweep, toy1d
from equireg.experiments.evaluation import (DICE_THRESHOLD, EVALUATION_BATCH, dice_rows, evaluate_lung,
                                            evaluate_retina, load_network, register_pairs)
from equireg.experiments.jobs import PathLike, load_pairs, save_pairs, setup_job
from equireg.experiments.pairs import (CT_PATIENTS, DATA_SEEDS, MASK_OFFSETS, build_brain_set, build_chest_ct,
                                       build_colin27, build_lung_set, build_retina_set, build_sweep_set, retina_masks)
from equireg.experiments.training_runs import VALIDATIONS_PER_RUN, train_method, validation_scores, validation_steps

__all__ = ["CT_PATIENTS", "DATA_SEEDS", "DICE_THRESHOLD", "EQUIVARIANCE_STRIDE", "EVALUATION_BATCH", "MASK_OFFSETS",
           "PathLike", "VALIDATIONS_PER_RUN", "build_brain_set", "build_chest_ct", "build_colin27", "build_lung_set", "build_retina_set", "build_sweep_set",
           "dice_rows", "equivariance", "evaluate_brain", "evaluate_lung", "evaluate_retina", "landscape", "load_network", "load_pairs", "register_pairs",
           "retina_masks", "save_pairs", "setup_job", "shift_sweep", "toy1d", "train_method",
           "validation_scores", "validation_steps"]
