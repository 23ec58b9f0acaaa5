"""The one writer of result files: six significant digits, fixed line ends, atomic."""

import pandas as pd

from equireg.files import write_csv, write_json


def test_csv_and_tsv_numbers_have_six_significant_digits(tmp_path):
    frame = pd.DataFrame({"method": ["carl"], "dice": [2 / 3], "pairs": [4]})
    write_csv(tmp_path / "a.csv", frame)
    write_csv(tmp_path / "a.tsv", frame, separator="\t")
    assert (tmp_path / "a.csv").read_bytes() == b"method,dice,pairs\ncarl,0.666667,4\n"
    assert (tmp_path / "a.tsv").read_bytes() == b"method\tdice\tpairs\ncarl\t0.666667\t4\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.tsv"]  # no temporary file left


def test_json_keys_are_sorted(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [0.5]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    0.5\n  ],\n  "b": 1\n}\n'
