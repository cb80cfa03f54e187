"""The notebook 05 demo: a learner's own image, the model's probabilities and where it looked.

The upload box is a plain ``ipywidgets.FileUpload``. It works in JupyterLab, Jupyter Notebook
and VS Code. Colab ships ipywidgets 7, whose upload value has another shape (both are read);
with ipywidgets 8 installed, Colab shows widgets only after
``google.colab.output.enable_custom_widget_manager()``, which :func:`upload_demo` calls there.
Colab also drops widget uploads above about 1 MB (ipywidgets issue 3452);
:func:`colab_upload` uses Colab's own upload dialog instead.
"""

from __future__ import annotations

import sys

import numpy as np

from . import DISCLAIMER
from .evaluation import draw_occlusion, occlusion
from .inference import ExportedModel, model_bytes


def _predicted(model: ExportedModel, data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The image as the model sees it and the model's class probabilities for it. Raises
    ``ValueError`` naming the problem when the file is not an image the model can read."""
    pixels = model.pixels_of(model_bytes(data, name))
    return pixels, model.predict_pixels(pixels[None])[0]


def prediction_figure(model: ExportedModel, data: bytes, name: str):
    """The image as the model sees it, the occlusion map for its top class, and the
    probabilities as bars, titled with the disclaimer."""
    return _figure(model, name, *_predicted(model, data, name))


def _figure(model: ExportedModel, name: str, pixels: np.ndarray, probabilities: np.ndarray):
    """:func:`prediction_figure` of an image already predicted."""
    import matplotlib.pyplot as plt

    top = int(probabilities.argmax())
    size = model.input_size
    heat = occlusion(pixels, model.predict_pixels, top, patch=size // 5, stride=size // 10)

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6),
                                                 gridspec_kw={"width_ratios": [1, 1, 1.3]})
    left.imshow(pixels)
    left.set_title(name if len(name) <= 45 else name[:42] + "...", fontsize=9)
    left.axis("off")
    draw_occlusion(middle, pixels, heat, model.classes[top])
    key = figure.colorbar(middle.images[-1], ax=middle, fraction=0.046, pad=0.03)
    key.set_ticks([key.vmin, 0, key.vmax], labels=["raises", "no change", "lowers"])
    key.ax.tick_params(labelsize=7)
    key.set_label(f"hiding a patch … P({model.classes[top]})", fontsize=7)
    colours = ["tab:red" if label == "malignant" else "tab:gray" for label in model.classes]
    right.barh(model.classes, probabilities, color=colours)
    right.set_xlim(0, 1)
    right.invert_yaxis()
    for row, p in enumerate(probabilities):
        right.text(min(p + 0.02, 0.85), row, f"{p:.2f}", va="center")
    right.set_title("model's probabilities", fontsize=9)
    figure.suptitle(DISCLAIMER, fontsize=9, color="firebrick")
    figure.tight_layout()
    return figure


def _prediction_text(classes: list[str], probabilities: np.ndarray, name: str) -> str:
    """The figure's probabilities (same precision) and the disclaimer as one line of text: what
    a screen reader, a copy and paste or a search of the page can find, unlike the picture."""
    shown = ", ".join(f"{label} {p:.2f}" for label, p in zip(classes, probabilities))
    return f"{name}: the model's probabilities are {shown}. {DISCLAIMER}"


def _uploads(value) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded file, from ipywidgets 8 (a tuple of dicts) or 7 (a dict)."""
    if isinstance(value, dict):
        return [(name, bytes(item["content"])) for name, item in value.items()]
    return [(item["name"], bytes(item["content"])) for item in value]


def _show(model: ExportedModel, name: str, data: bytes) -> None:
    """Display one uploaded image's figure and its text, or say why it cannot be predicted."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    try:
        pixels, probabilities = _predicted(model, data, name)
    except ValueError as error:
        print(f"{name}: not predicted: {error}")
        return
    figure = _figure(model, name, pixels, probabilities)
    display(figure)
    plt.close(figure)
    print(_prediction_text(model.classes, probabilities, name))


def _in_colab() -> bool:
    return "google.colab" in sys.modules


NEEDS_KERNEL = ("The upload box below works only while this notebook runs (Jupyter, VS Code or "
                "Colab, with its kernel started). In a saved or HTML copy it is empty or does "
                "nothing: open the notebook and run it to try an image of your own.")


def upload_demo(model: ExportedModel):
    """An upload box; each uploaded image is shown with :func:`prediction_figure` and, below it,
    the same probabilities and the disclaimer as text. Above it, a plain note (kept in saved and
    HTML copies, where widgets are dead) says it needs a kernel."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    if _in_colab() and int(widgets.__version__.split(".")[0]) >= 8:
        from google.colab import output

        output.enable_custom_widget_manager()
    display(HTML(f"<p><i>{NEEDS_KERNEL}</i></p>"))
    # the label needs about 170 pixels: the default width (148) cut it to "Upload an ima…"
    upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload an image",
                                layout=widgets.Layout(width="auto", min_width="200px", align_self="flex-start"))
    shown = widgets.Output()

    def show(_change) -> None:
        with shown:
            shown.clear_output(wait=True)
            for name, data in _uploads(upload.value):
                _show(model, name, data)

    upload.observe(show, names="value")
    note = widgets.HTML(f"<b>{DISCLAIMER}</b><br>Dermoscopic images only; the model has never "
                        "seen a phone photo of skin. On Colab, if nothing appears or the image "
                        "is over 1 MB, run <code>demo.colab_upload(model)</code> instead.")

    class Demo(widgets.VBox):
        """Where no kernel draws the box (a saved or HTML copy), its text says why."""

        def __repr__(self) -> str:
            return f"[The upload demo. {NEEDS_KERNEL}]"

    return Demo([note, upload, shown])


def colab_upload(model: ExportedModel) -> None:
    """Colab only: choose images in Colab's own upload dialog; each is shown as in the demo."""
    if not _in_colab():
        raise RuntimeError("colab_upload works in Google Colab only; use upload_demo(model) here.")
    from google.colab import files

    print(DISCLAIMER)
    for name, data in files.upload().items():
        _show(model, name, data)
