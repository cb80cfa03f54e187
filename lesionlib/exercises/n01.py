"""Checks for the exercises of notebook 01 (data collection)::

    from lesionlib.exercises import n01 as check
    check.diagnoses_per_class(by_diagnosis, data.manifest)

Each check works out the right answer from the data it is given (synthetic images, HAM10000,
an ISIC download: the numbers differ), so it holds no answer of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..taxonomy import CLASSES, class_of_diagnosis_1
from . import NotRight, passed, require, results_of, unanswered

NOT_RECORDED = "not recorded"


def _key(value: Any) -> str:
    """A class or diagnosis as text, with every kind of missing value as one."""
    return NOT_RECORDED if pd.isna(value) else str(value)


def _pairs(answer: Any) -> dict[tuple[str, str], float] | None:
    """A learner's counts as ``{(class, diagnosis): count}``, or None if the table is not one we
    can read: a Series indexed by both columns (``groupby().size()``, ``value_counts()``, also
    as a one-column frame) or a table of classes by diagnoses (``pd.crosstab``), either way round."""
    if isinstance(answer, pd.DataFrame) and answer.shape[1] == 1 and answer.index.nlevels == 2:
        answer = answer.iloc[:, 0]
    if isinstance(answer, pd.Series) and answer.index.nlevels == 2:
        pairs = {(_key(a), _key(b)): value for (a, b), value in answer.items()}
    elif isinstance(answer, pd.DataFrame) and answer.index.nlevels == 1:
        pairs = {(_key(row), _key(column)): value for row, values in answer.iterrows()
                 for column, value in values.items() if pd.notna(value) and value != 0}
    else:
        return None
    if any(b in CLASSES and a not in CLASSES for a, b in pairs):  # diagnosis first: turn round
        pairs = {(b, a): value for (a, b), value in pairs.items()}
    return pairs


def diagnoses_per_class(by_diagnosis: Any, manifest: pd.DataFrame) -> None:
    """Exercise 1: ``by_diagnosis`` counts the manifest's images per class and diagnosis."""
    if unanswered(by_diagnosis):
        return
    right = {(_key(a), _key(b)): n for (a, b), n in
             manifest.groupby(["label", "diagnosis"], dropna=False).size().items()}
    known = {pair: n for pair, n in right.items() if pair[1] != NOT_RECORDED}
    require(not (isinstance(by_diagnosis, pd.DataFrame) and by_diagnosis.index.nlevels == 2
                 and by_diagnosis.shape[1] > 1),
            "Your table has a column of counts for every column of the manifest: count the rows "
            "of each group once (`.size()`), not the values of every column (`.count()`).")
    mine = _pairs(by_diagnosis)
    require(mine is not None,
            "Make one count per class *and* diagnosis: group the manifest by both columns, "
            "`label` and `diagnosis`. (Grouped by one column, you get one count per class, or "
            "one per diagnosis.)")
    require(all(pd.api.types.is_number(n) for n in mine.values()),
            "The values of your table should be numbers of images.")
    total = float(sum(mine.values()))
    require(abs(total - 1) > 1e-6 or len(manifest) == 1,
            "Your numbers add up to 1: they are shares. Count the images instead.")
    require(set(mine) <= set(right),
            "Your table has rows that are not a (class, diagnosis) pair of the manifest: group "
            "the images kept, `data.manifest`, by its columns `label` and `diagnosis`.")
    require(mine in (right, known),
            f"Your counts add up to {total:,.0f}, but the manifest has {len(manifest):,} images: "
            "count every row of each (class, diagnosis) group, once.")
    top = max(known or right, key=lambda pair: (known or right)[pair])
    passed(f"{len(known)} diagnoses in {len({pair[0] for pair in right})} classes; the commonest "
           f"is {top[1]!r} ({top[0]}), and the network is told none of them, only the class.")


# The original TensorFlow-for-Poets skin project's word for the middle class.
LEGACY_PATHS = ("Intermediate", "Intermediate:Intermediate melanocytic proliferations")


def _terms() -> list[str]:
    """Every term of ISIC's diagnosis hierarchy, as a full path (``"Benign:...:Nevus"``)."""
    from isic_metadata.diagnosis_hierarchical import DiagnosisEnum

    return [term.value for term in DiagnosisEnum]


def class_of(function: Callable[[str], Any]) -> None:
    """Exercise 2: ``function`` turns a path of ISIC's diagnosis hierarchy into the course's class."""
    paths = _terms()
    results = results_of(function, paths + list(LEGACY_PATHS), "class_of")
    if results is None:
        return
    for path, mine in zip(paths + list(LEGACY_PATHS), results):
        right = class_of_diagnosis_1(path)
        if mine == right:
            continue
        require(mine is not None, f"For {path!r} your function returns nothing: does every way "
                                  "through it end with `return`?")
        require(path not in LEGACY_PATHS,
                f"Right for every term of ISIC's hierarchy, but for {path!r} your function returns "
                f"{mine!r}: the original project's word for the middle class names the same class.")
        require(not (isinstance(mine, str) and mine.lower() == right),
                f"For {path!r} your function returns {mine!r}: the course writes its classes in "
                f"lower case, {', '.join(CLASSES)}.")
        require(not (isinstance(mine, str)
                     and mine.lower() in [level.lower() for level in path.split(":")[1:]]),
                f"For {path!r} your function returns {mine!r}, a finer level: the class is the "
                "first level of the path.")
        raise NotRight(f"For {path!r} your function returns {mine!r}. Look at the path: its "
                       "levels are separated by ':', and the class is one of them.")
    classes = pd.Series([class_of_diagnosis_1(path) for path in paths]).value_counts()
    passed(f"Your function sorts all {len(paths)} terms of ISIC's hierarchy: "
           + ", ".join(f"{classes.get(name, 0)} {name}" for name in CLASSES) + ".")


def sha256_of(function: Callable[[Path], Any], manifest: pd.DataFrame, per_class: int = 4) -> None:
    """Exercise 3: ``function`` returns a file's SHA-256 as 64 hexadecimal characters, as in the
    manifest's ``sha256`` column; tried on ``per_class`` images of each class."""
    chosen = manifest.groupby("label").head(per_class)
    results = results_of(function, list(chosen["path"]), "sha256_of", lambda path: Path(path).name)
    if results is None:
        return
    for path, mine in zip(chosen["path"], results):
        right = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if mine == right:
            continue
        require(not isinstance(mine, bytes),
                "Your function returns bytes; the manifest keeps the hash as text, 64 hexadecimal "
                "characters. The hash object has a method that gives that text.")
        require(isinstance(mine, str), f"Your function returns a {type(mine).__name__}: return the "
                                       "hash as a string of hexadecimal characters.")
        require(len(mine) == 64, f"Your hash has {len(mine)} characters, SHA-256's has 64: is it "
                                 "another hash function?")
        require(mine.lower() != right, "Nearly: write the hexadecimal digits in lower case, as "
                                       "`hashlib` does and the manifest keeps them.")
        require(mine not in {hashlib.sha256(str(path).encode()).hexdigest(),
                             hashlib.sha256(Path(path).name.encode()).hexdigest()},
                "Your function hashes the file's name; hash what is in the file, its bytes.")
        raise NotRight(f"Your hash of {Path(path).name} is not its SHA-256. Read the whole file "
                       "in binary mode and hash exactly those bytes.")
    passed(f"Your function gives each of the {len(chosen)} images tried its `sha256`: only "
           "identical bytes give the same hash, so a file filed twice is found without comparing "
           "a single pixel.")
