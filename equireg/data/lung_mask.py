"""A lung mask from chest CT in HU: air inside the body, its largest parts, vessels filled in.

Arrays are ``[z, y, x]`` with axial slices along axis 0 (the scanner's layout). Holes are filled
slice by slice because a scan often cuts the lungs at its top or bottom, which would leave them
open in 3-D.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: below this the voxel is air or lung parenchyma (about -850 HU); vessels and tissue lie above
AIR_HU = -400.0


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(plane) for plane in mask])


def _largest(mask: np.ndarray, count: int, fraction: float) -> np.ndarray:
    """The ``count`` largest connected parts of ``mask``, each at least ``fraction`` of the largest."""
    labels, found = ndimage.label(mask)
    if not found:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:count]
    keep = [k + 1 for k in order if sizes[k] >= fraction * sizes[order[0]]]
    return np.isin(labels, keep)


def segment_lungs(image_hu: np.ndarray) -> np.ndarray:
    """Bool lung mask: air below :data:`AIR_HU` enclosed by the body (the largest non-air part, filled
    per slice), its two largest parts (the lungs, or one when they touch; gas in the bowel or the
    trachea alone is smaller), then closed and filled so that vessels and nodules count as lung."""
    air = np.asarray(image_hu) < AIR_HU
    body = _fill_slices(_largest(~air, 1, 0.0))
    lungs = _largest(air & body, 2, 0.1)
    # close gaps at the pleura left by vessels touching it, in-plane only (slices can be 5 mm apart)
    lungs = ndimage.binary_closing(lungs, structure=np.ones((1, 5, 5), dtype=bool))
    return _fill_slices(lungs) & body
