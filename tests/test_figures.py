"""Figure details that a glance at a smoke run would miss."""

from equireg import figures
from equireg.methods import DISPLAY_NAMES


def test_qualitative_row_labels_fit_their_row():
    for method in DISPLAY_NAMES:
        assert max(map(len, figures.row_label(method).split("\n"))) <= figures.ROW_LABEL_WIDTH
    assert figures.row_label("transformer_only") == "ablation:\ntransformer only"
    assert figures.row_label("classical") == "classical\n(SimpleITK)"
