import json

import numpy as np
import pytest
from PIL import Image

from cover.downstream.cases import find_cases, split_cases
from cover.errors import ConfigError, DataError


def test_split_is_seeded_nested_and_disjoint():
    a = split_cases(40, seed=7, val_fraction=0.2, label_fraction=0.25)
    assert a == split_cases(40, seed=7, val_fraction=0.2, label_fraction=0.25)
    assert a != split_cases(40, seed=8, val_fraction=0.2, label_fraction=0.25)
    assert (len(a["val"]), len(a["train"]), len(a["unused"])) == (8, 8, 24)
    assert not set(a["val"]) & set(a["train"]) and sorted(a["val"] + a["train"] + a["unused"]) == list(range(40))
    bigger = split_cases(40, seed=7, val_fraction=0.2, num_labeled=20)
    assert bigger["val"] == a["val"] and set(a["train"]) <= set(bigger["train"])  # budgets are nested
    with pytest.raises(ConfigError, match="num_labeled: 33"):
        split_cases(40, seed=7, val_fraction=0.2, num_labeled=33)


def write_pngs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / name)


def test_classes_from_a_csv_a_datalist_and_subfolders(tmp_path):
    write_pngs(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "classes.csv").write_text("image,label\na.png,10\nb,2\nc.png,10\n")
    cases, names = find_cases("cls", str(tmp_path / "img"), str(tmp_path / "classes.csv"))
    assert names == ["2", "10"] and [c.target for c in cases] == [1, 0, 1]  # numeric order
    (tmp_path / "list.csv").write_text("image,label\nimg/a.png,cat\nimg/b.png,dog\n")
    cases, names = find_cases("cls", datalist=str(tmp_path / "list.csv"))
    assert names == ["cat", "dog"] and [c.target for c in cases] == [0, 1]
    write_pngs(tmp_path / "folders" / "yes", ["x.png"])
    write_pngs(tmp_path / "folders" / "no", ["y.png"])
    cases, names = find_cases("cls", str(tmp_path / "folders"))
    assert names == ["no", "yes"] and {c.name: c.target for c in cases} == {"no/y": 0, "yes/x": 1}


def test_label_maps_from_folders_and_datalists(tmp_path):
    write_pngs(tmp_path / "img", ["a.png", "b.png"])
    write_pngs(tmp_path / "lab", ["a_mask.png", "b.png"])
    cases, _ = find_cases("seg", str(tmp_path / "img"), str(tmp_path / "lab"))
    assert [(c.name, c.label.name) for c in cases] == [("a", "a_mask.png"), ("b", "b.png")]
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "img/a.png", "label": "lab/b.png"}]}))
    cases, _ = find_cases("seg", datalist=str(tmp_path / "list.json"))
    assert cases[0].label == tmp_path / "lab" / "b.png"
    write_pngs(tmp_path / "img", ["c.png"])
    with pytest.raises(DataError, match="c.png: no label map"):
        find_cases("seg", str(tmp_path / "img"), str(tmp_path / "lab"))
