"""The notebook 05 demo: a learner's own image, the model's probabilities and where it looked.

The upload box is a plain ``ipywidgets.FileUpload``, which works in JupyterLab, Jupyter
Notebook, VS Code and Colab (Colab ships ipywidgets 7, whose upload value has another shape;
both are read). Colab drops uploads above about 1 MB (ipywidgets issue 3452), so the demo
says so.
"""

from __future__ import annotations

from . import DISCLAIMER
from .evaluation import occlusion
from .inference import ExportedModel, model_bytes


def prediction_figure(model: ExportedModel, data: bytes, name: str):
    """The image as the model sees it, the occlusion map for its top class, and the
    probabilities as bars, titled with the disclaimer."""
    import matplotlib.pyplot as plt

    pixels = model.pixels_of(model_bytes(data, name))
    probabilities = model.predict_pixels(pixels[None])[0]
    top = int(probabilities.argmax())
    size = model.input_size
    heat = occlusion(pixels, model.predict_pixels, top, patch=size // 5, stride=size // 10)

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6),
                                                 gridspec_kw={"width_ratios": [1, 1, 1.3]})
    left.imshow(pixels)
    left.set_title(name if len(name) <= 45 else name[:42] + "...", fontsize=9)
    middle.imshow(pixels)
    limit = max(abs(heat).max(), 1e-6)
    middle.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55)
    middle.set_title(f"red: hiding it lowers P({model.classes[top]})", fontsize=9)
    for axis in (left, middle):
        axis.axis("off")
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


def _uploads(value) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded file, from ipywidgets 8 (a tuple of dicts) or 7 (a dict)."""
    if isinstance(value, dict):
        return [(name, bytes(item["content"])) for name, item in value.items()]
    return [(item["name"], bytes(item["content"])) for item in value]


def upload_demo(model: ExportedModel):
    """An upload box; each uploaded image is shown with :func:`prediction_figure`."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload an image")
    output = widgets.Output()

    def show(_change) -> None:
        with output:
            output.clear_output(wait=True)
            for name, data in _uploads(upload.value):
                try:
                    figure = prediction_figure(model, data, name)
                except ValueError as error:
                    print(f"{name}: not predicted: {error}")
                    continue
                plt.show(figure)

    upload.observe(show, names="value")
    note = widgets.HTML(f"<b>{DISCLAIMER}</b><br>Dermoscopic images only; the model has never "
                        "seen a phone photo of skin. On Colab, keep uploads under 1 MB.")
    return widgets.VBox([note, upload, output])
