"""The course's three classes and how every source's diagnosis maps onto them.

The classes are the top level of the ISIC Archive's diagnosis hierarchy (``diagnosis_1``):
Benign, Indeterminate, Malignant. The original TensorFlow-for-Poets skin project called the
middle class "intermediate"; ISIC's word is "Indeterminate" and the course uses it.

Older sources name a diagnosis by a single term (HAM10000's ``dx`` codes, the archive's legacy
``diagnosis`` field). We place each term in ISIC's hierarchy with ``isic-metadata`` (the
archive's own schema package), and its first level is the class.
"""

from __future__ import annotations

import pandas as pd
from isic_metadata.diagnosis_hierarchical import DiagnosisEnum

CLASSES: tuple[str, ...] = ("benign", "indeterminate", "malignant")

# HAM10000's seven ``dx`` codes, each named by a term of ISIC's hierarchy.
# akiec holds actinic keratoses (ISIC: Indeterminate) and some Bowen's disease (squamous cell
# carcinoma in situ, ISIC: Malignant); HAM10000 does not tell them apart, so the whole code
# goes to Indeterminate, the class of most of its images.
HAM10000_DX: dict[str, tuple[str, str]] = {
    "nv": ("melanocytic nevus", "Nevus"),
    "bkl": ("benign keratosis-like lesion", "Pigmented benign keratosis"),
    "df": ("dermatofibroma", "Dermatofibroma"),
    "vasc": ("vascular lesion", "Benign soft tissue proliferations - Vascular"),
    "akiec": ("actinic keratosis / intraepithelial carcinoma", "Solar or actinic keratosis"),
    "mel": ("melanoma", "Melanoma, NOS"),
    "bcc": ("basal cell carcinoma", "Basal cell carcinoma"),
}

# The archive's legacy single-term ``diagnosis`` values that differ from a hierarchy term.
LEGACY_TERMS: dict[str, str] = {
    "nevus": "Nevus",
    "melanoma": "Melanoma, NOS",
    "basal cell carcinoma": "Basal cell carcinoma",
    "actinic keratosis": "Solar or actinic keratosis",
    "seborrheic keratosis": "Seborrheic keratosis",
    "pigmented benign keratosis": "Pigmented benign keratosis",
    "dermatofibroma": "Dermatofibroma",
    "vascular lesion": "Benign soft tissue proliferations - Vascular",
    "solar lentigo": "Solar lentigo",
    "squamous cell carcinoma": "Squamous cell carcinoma, NOS",
}


def hierarchy_path(term: str) -> str:
    """The full ISIC hierarchy path of a term, e.g. ``"Nevus"`` -> ``"Benign:...:Nevus"``."""
    try:  # isic-metadata 6 (newest on Python 3.12, so on Colab) raises in accept_terminal_values
        return DiagnosisEnum(DiagnosisEnum.accept_terminal_values(term)).value
    except ValueError:
        raise ValueError(f"{term!r} is not a term of ISIC's diagnosis hierarchy") from None


def class_of_diagnosis_1(diagnosis_1: object) -> str | None:
    """The course class of an ISIC ``diagnosis_1`` value (``"Malignant"`` -> ``"malignant"``)."""
    if not isinstance(diagnosis_1, str):
        return None
    label = diagnosis_1.split(":")[0].strip().lower()
    if label == "intermediate":  # the original project's word for the same class
        label = "indeterminate"
    return label if label in CLASSES else None


def class_of_term(term: str) -> str | None:
    """The class of a single diagnosis term (HAM10000 code, legacy or hierarchy term)."""
    term = term.strip()
    if term in HAM10000_DX:
        term = HAM10000_DX[term][1]
    term = LEGACY_TERMS.get(term.lower(), term)
    try:
        return class_of_diagnosis_1(hierarchy_path(term))
    except ValueError:
        return class_of_diagnosis_1(term)


def ham10000_mapping() -> pd.DataFrame:
    """The HAM10000 ``dx`` mapping as a table a learner can read: code, meaning, ISIC path, class."""
    rows = []
    for code, (meaning, term) in HAM10000_DX.items():
        path = hierarchy_path(term)
        rows.append({"dx": code, "meaning": meaning, "ISIC diagnosis": path,
                     "class": class_of_diagnosis_1(path)})
    return pd.DataFrame(rows).sort_values(["class", "dx"], ignore_index=True)
