"""Figure details that a glance at a smoke run would miss."""

import numpy as np

from equireg import figures
from equireg.data.datasets import save_arrays
from equireg.methods import DISPLAY_NAMES


def test_qualitative_row_labels_fit_their_row():
    for method in DISPLAY_NAMES:
        assert max(map(len, figures.row_label(method).split("\n"))) <= figures.ROW_LABEL_WIDTH
    assert figures.row_label("transformer_only") == "ablation:\ntransformer only"
    assert figures.row_label("classical") == "classical\n(SimpleITK)"


def test_qualitative_rows_are_named_by_the_examples_file_not_its_path(tmp_path):
    images = {f"test_shift/{key}": np.zeros((8, 8), np.float32) for key in ("fixed", "moving", "warped")}
    path = tmp_path / "retina" / "carl" / "none" / "seed0_examples.npz"
    save_arrays(path, {**images, "method": np.array("transformer_only")})
    figure = figures.qualitative_retina([str(path)])
    assert figure.axes[0].get_ylabel() == "ablation:\ntransformer only"
