"""Looking at the data before training on it: the computations and figures of notebook 02.

Each ``*_figure`` function returns a matplotlib figure; the numbers behind it come from a pure
function beside it, so the lesson (and the tests) can print them too.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from .taxonomy import CLASSES

NOT_RECORDED = "not recorded"
PALETTE = dict(zip(CLASSES, sns.color_palette("colorblind", 3)))


def present_classes(manifest: pd.DataFrame) -> list[str]:
    """The course classes that have images, in the course's order."""
    return [c for c in CLASSES if (manifest["label"] == c).any()]


def class_balance(manifest: pd.DataFrame, available: dict | None = None) -> pd.DataFrame:
    """Images per class in use (all three, zero included), their share and, if given, how many
    the source had before the per-class cap."""
    counts = manifest["label"].value_counts().reindex(CLASSES, fill_value=0)
    table = pd.DataFrame({"in use": counts, "share": (counts / max(counts.sum(), 1)).round(3)})
    if available is not None:
        table.insert(0, "in the source", pd.Series(available).reindex(CLASSES, fill_value=0))
    return table.rename_axis("class")


def class_balance_figure(table: pd.DataFrame) -> plt.Figure:
    """Bars of :func:`class_balance`: images in the source (if known) and in use."""
    columns = [c for c in ("in the source", "in use") if c in table]
    figure, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 3.2), squeeze=False)
    for axis, column in zip(axes[0], columns):
        sns.barplot(x=table.index, y=table[column], hue=table.index, palette=PALETTE,
                    legend=False, ax=axis)
        for position, count in enumerate(table[column]):
            axis.annotate(f"{count:,}", (position, count), ha="center", va="bottom")
        axis.set(xlabel="", ylabel="images", title=f"Images per class: {column}")
        axis.set_ylim(0, max(table[column].max(), 1) * 1.15)
    figure.tight_layout()
    return figure


def sample_grid_figure(manifest: pd.DataFrame, per_class: int = 6, seed: int = 0,
                       by: str = "label") -> plt.Figure:
    """A few random images of each class (or of each value of another column), one row each."""
    rows = present_classes(manifest) if by == "label" else sorted(manifest[by].unique())
    figure, axes = plt.subplots(len(rows), per_class, figsize=(1.8 * per_class, 1.9 * len(rows)),
                                squeeze=False)
    for row, value in enumerate(rows):
        members = manifest[manifest[by] == value]
        chosen = members.sample(min(per_class, len(members)), random_state=seed)
        for column, axis in enumerate(axes[row]):
            axis.axis("off")
            if column < len(chosen):
                item = chosen.iloc[column]
                with Image.open(item["path"]) as image:
                    axis.imshow(image)
                axis.set_title(str(item["diagnosis"])[:18], fontsize=8)
        axes[row][0].text(-0.1, 0.5, value, transform=axes[row][0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=11 if by == "label" else 8)
    figure.suptitle(f"Random images per {'class' if by == 'label' else by} (diagnosis above each)")
    return figure


def size_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """How many images have each width x height, per class."""
    sizes = manifest.assign(size=manifest["width"].astype(str) + "x" + manifest["height"].astype(str))
    return pd.crosstab(sizes["size"], sizes["label"]).sort_values(by=present_classes(manifest)[0],
                                                                  ascending=False)


def size_figure(manifest: pd.DataFrame) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(5, 4))
    distinct = manifest[["width", "height"]].drop_duplicates()
    jitter = np.random.default_rng(0).normal(0, 1.5, (len(manifest), 2)) if len(distinct) > 1 else 0
    sizes = manifest[["width", "height"]].to_numpy() + jitter
    sns.scatterplot(x=sizes[:, 0], y=sizes[:, 1], hue=manifest["label"].to_numpy(),
                    hue_order=present_classes(manifest), palette=PALETTE, alpha=0.5, s=15, ax=axis)
    title = (f"All {len(manifest):,} images are {distinct.iloc[0, 0]} x {distinct.iloc[0, 1]}"
             if len(distinct) == 1 else f"Image sizes: {len(distinct)} distinct (dots jittered)")
    axis.set(xlabel="width (pixels)", ylabel="height (pixels)", title=title)
    return figure


def _recorded(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna(NOT_RECORDED)


def metadata_figure(manifest: pd.DataFrame) -> plt.Figure:
    """Age, sex and anatomic site per class; missing values shown as 'not recorded'."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1.2, 0.8, 1.6]})
    ages = manifest.dropna(subset=["age"])
    if len(ages):
        sns.histplot(ages, x="age", hue="label", hue_order=present_classes(ages), palette=PALETTE,
                     stat="density",
                     common_norm=False, binwidth=5, element="step", ax=axes[0])
    axes[0].set_title(f"Age ({len(manifest) - len(ages)} not recorded)")
    for axis, column, title in ((axes[1], "sex", "Sex"), (axes[2], "site", "Anatomic site")):
        shares = (pd.crosstab(_recorded(manifest[column]), manifest["label"], normalize="columns")
                  .reindex(columns=present_classes(manifest)))
        shares.plot.barh(ax=axis, color=[PALETTE[c] for c in shares.columns], width=0.8)
        axis.set(title=f"{title} (share of each class)", xlabel="share of the class's images", ylabel="")
    figure.tight_layout()
    return figure


def images_per_group(manifest: pd.DataFrame, column: str) -> pd.Series:
    """How many groups (lesions or patients) have 1, 2, 3... images; empty if ids are unknown."""
    known = manifest[column].dropna()
    return known.value_counts().value_counts().sort_index().rename_axis(f"images per {column}")


def random_split_leakage(manifest: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Split images at random (as if lesions did not matter) and count what leaks into the test set.

    Returns the test images whose lesion also has an image in the training part.
    """
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(manifest)) < test_fraction
    lesions = manifest["lesion_id"]
    train_lesions = set(lesions[~is_test].dropna())
    leaked = lesions[is_test].isin(train_lesions) & lesions[is_test].notna()
    return {"test images": int(is_test.sum()), "with their lesion also in training": int(leaked.sum()),
            "share": round(float(leaked.mean()) if is_test.any() else 0.0, 3)}


def groups_figure(manifest: pd.DataFrame) -> plt.Figure:
    """Images per lesion, and per patient where the source records patients."""
    columns = [c for c in ("lesion_id", "patient_id") if not images_per_group(manifest, c).empty]
    figure, axes = plt.subplots(1, max(len(columns), 1), figsize=(5.5 * max(len(columns), 1), 3.5),
                                squeeze=False)
    if not columns:
        axes[0][0].text(0.5, 0.5, "this source records no lesion or patient ids",
                        ha="center", va="center")
        axes[0][0].set_axis_off()
    for axis, column in zip(axes[0], columns):
        counts = images_per_group(manifest, column)
        name = column.removesuffix("_id")
        axis.bar(counts.index.astype(str), counts.values, color="gray")
        axis.set(xlabel=f"images of the same {name}", ylabel=f"{name}s", yscale="log",
                 title=f"Images per {name}")
    figure.tight_layout()
    return figure


def _colour_row(path) -> dict:
    with Image.open(path) as image:
        small = image.convert("RGB").resize((64, 64))
    rgb = np.asarray(small, dtype=np.float64) / 255.0
    luminance = np.asarray(small.convert("L"), dtype=np.float64) / 255.0  # perceived brightness
    saturation = np.asarray(small.convert("HSV"), dtype=np.float64)[..., 1] / 255.0
    return {"red": rgb[..., 0].mean(), "green": rgb[..., 1].mean(), "blue": rgb[..., 2].mean(),
            "brightness": luminance.mean(), "saturation": saturation.mean()}


def colour_statistics(manifest: pd.DataFrame) -> pd.DataFrame:
    """Mean red, green, blue, brightness (luminance) and saturation (0-1) of each image."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(_colour_row, manifest["path"]))
    return pd.DataFrame(rows, index=manifest.index).assign(label=manifest["label"].values)


def colour_figure(stats: pd.DataFrame) -> plt.Figure:
    long = stats.melt(id_vars="label", var_name="channel", value_name="mean value")
    figure, axis = plt.subplots(figsize=(10, 3.8))
    with warnings.catch_warnings():  # seaborn 0.13.2 still passes matplotlib's deprecated `vert`
        warnings.filterwarnings("ignore", message="vert: bool", category=DeprecationWarning)
        sns.boxplot(long, x="channel", y="mean value", hue="label", palette=PALETTE,
                    hue_order=[c for c in CLASSES if c in set(stats["label"])], fliersize=1, ax=axis)
    axis.set(xlabel="", title="Colour of the images per class (mean over each image)")
    return figure
