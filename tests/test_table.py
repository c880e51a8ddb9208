import json

import pytest

from snn_spikefit.table import Table


def test_table_formats_and_saves(tmp_path):
    t = Table(["a", "b"], [[1, 0.123456], ["x", [1, 2]]], title="T")
    text = str(t)
    assert text.splitlines()[0] == "T" and "0.1235" in text
    assert t.to_csv(tmp_path / "t.csv").splitlines() == ["a,b", "1,0.123456", 'x,"[1, 2]"']
    data = json.loads(t.to_json(tmp_path / "t.json"))
    assert data["rows"][1] == {"a": "x", "b": [1, 2]}
    assert t.to_markdown().count("|---|") == 1


def test_bad_row_length():
    with pytest.raises(ValueError, match="row 0 has 1 cells, expected 2"):
        Table(["a", "b"], [[1]])
