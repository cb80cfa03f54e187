"""The three classes and the mappings onto them, checked against isic-metadata's hierarchy."""

from __future__ import annotations

import pytest

from lesionlib import taxonomy


def test_every_ham10000_code_is_placed_in_the_isic_hierarchy():
    table = taxonomy.ham10000_mapping()
    assert set(table["dx"]) == {"nv", "bkl", "df", "vasc", "akiec", "mel", "bcc"}
    by_code = dict(zip(table["dx"], table["class"]))
    assert by_code == {"nv": "benign", "bkl": "benign", "df": "benign", "vasc": "benign",
                       "akiec": "indeterminate", "mel": "malignant", "bcc": "malignant"}
    assert table["ISIC diagnosis"].str.count(":").ge(1).all()


@pytest.mark.parametrize(("value", "label"), [
    ("Benign", "benign"), ("Malignant", "malignant"), ("Indeterminate", "indeterminate"),
    ("Intermediate", "indeterminate"),  # the original project's word
    ("Malignant:Malignant melanocytic proliferations (Melanoma)", "malignant"),
    ("benign", "benign"), (None, None), ("", None), ("unknown", None),
])
def test_class_of_diagnosis_1(value, label):
    assert taxonomy.class_of_diagnosis_1(value) == label


@pytest.mark.parametrize(("term", "label"), [
    ("nevus", "benign"), ("melanoma", "malignant"), ("actinic keratosis", "indeterminate"),
    ("Melanoma Invasive", "malignant"), ("mel", "malignant"), ("no such diagnosis", None),
])
def test_class_of_term(term, label):
    assert taxonomy.class_of_term(term) == label


def test_unknown_term_is_a_clear_error():
    with pytest.raises(ValueError, match="not a term of ISIC's diagnosis hierarchy"):
        taxonomy.hierarchy_path("Moonburn")
