"""Physical geometry: voxel indices <-> mm <-> [0, 1] coordinates, and points inside an image."""

import numpy as np
import SimpleITK as sitk

from equireg import geometry
from equireg.transforms import inside


def test_index_physical_and_coordinates_agree_with_itk_both_ways():
    image = sitk.Image([7, 5, 4], sitk.sitkFloat32)  # x, y, z sizes: array shape (4, 5, 7)
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((3.0, -2.0, 7.5))
    angle = 0.3
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    shape, frame = (4, 5, 7), geometry.geometry(image)
    points = geometry.voxel_points(shape, frame)
    assert points.shape == (4, 5, 7, 3)
    np.testing.assert_allclose(points[1, 2, 3], image.TransformContinuousIndexToPhysicalPoint((3.0, 2.0, 1.0)))
    index = np.array([[0.5, 1.25, 6.0], [3.0, 0.0, 2.5]])
    np.testing.assert_allclose(geometry.physical_to_index(geometry.index_to_physical(index, *frame), *frame), index,
                               atol=1e-12)
    coordinates = geometry.physical_to_coordinates(points, frame, shape)
    assert coordinates.shape == (1, 3, 4, 5, 7) and float(coordinates.min()) > -1e-6
    np.testing.assert_allclose(geometry.coordinates_to_physical(coordinates, frame, shape), points, atol=1e-5)


def test_inside_reaches_from_voxel_zero_to_the_last_within_the_tolerance():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [-1e-7, 2.0], [3.0, 4.0 + 1e-7], [1.0, 5.0]])
    np.testing.assert_array_equal(inside(points, (4, 5)), [True, True, False, False, False])
    np.testing.assert_array_equal(inside(points, (4, 5), tolerance=1e-6), [True, True, True, True, False])
    assert inside(points[None], (4, 5)).shape == (1, 5)
