"""Training that survives an interruption: a checkpoint after every epoch, resumed where it stopped.

Fine-tuning on images takes hours on a CPU; a laptop that sleeps, a kernel restarted or a
``kill -9`` must not cost them. The notebook keeps the Keras of it in sight::

    run = checkpoints.Run(folder, record, patience=3)
    start = run.resume(model, epochs)          # 0, or the epoch after the last one saved
    model.fit(..., epochs=epochs, initial_epoch=start, callbacks=[run, checkpoints.progress(n)])

After each epoch the model's weights, with the optimizer's state, go to one ``.weights.h5``
file written atomically, then ``state.json`` (the epoch, the history so far, early stopping's
best value and patience) replaces the old one atomically: whenever the process dies, the
folder holds the last finished epoch whole, and temporaries of killed writers are swept
(:mod:`lesionlib.fsutil`). Early stopping is part of the saved state, so a resumed run stops
where an uninterrupted one would have (up to the order of its shuffled batches); at the end
the best epoch's weights are put back in the model.

Each run lives in a subfolder named by a digest of its ``record`` (the settings that define it)
and of the model's weight shapes: change a setting and a new run starts beside the old one,
change it back and the old one resumes. An unreadable checkpoint is reported and training
starts again from the beginning; only files this module wrote are ever replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import pandas as pd

from . import fsutil
from .tfutil import import_tensorflow

STATE = "state.json"


def _fingerprint(record: dict, model) -> str:
    shapes = [[list(weight.shape), bool(weight.trainable)] for weight in model.weights]
    text = json.dumps({"record": record, "weights": shapes}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _callback_base():
    import_tensorflow()
    import keras

    return keras.callbacks.Callback


class Run(_callback_base()):
    """A Keras callback that saves each epoch and stops early, and knows how to resume."""

    def __init__(self, folder: Path, record: dict, *, monitor: str = "val_loss", mode: str = "min",
                 patience: int = 3, min_delta: float = 1e-3) -> None:
        """``monitor`` is a value ``fit`` logs; ``mode`` says whether lower ("min", a loss) or higher
        ("max", e.g. an AUC) is better."""
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self.root, self.record = Path(folder), record
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.folder: Path | None = None
        self.state: dict = {}

    # -- before fit -------------------------------------------------------------------------
    def resume(self, model, epochs: int) -> int:
        """Load the last saved epoch of this run into ``model`` (weights and optimizer) and
        return the epoch to start from: 0 for a new run, ``epochs`` if it already ended."""
        self.folder = self.root / _fingerprint(self.record, model)
        self.state = self._read_state(model)
        if not self.state:
            self.state = {"record": self.record, "epoch": 0, "history": {}, "best": None,
                          "best_epoch": None, "wait": 0, "stopped": False, "seconds": 0.0,
                          "monitor": self.monitor, "mode": self.mode}
            return 0
        done = self.state["epoch"]
        ended = self.state["stopped"] or done >= epochs
        print(f"Resumed {self.folder}: {done} epoch(s) done" + (", training had ended" if ended else ""))
        if ended:
            self._load(model, self.state["best_file"])
            return epochs
        return done

    def _read_state(self, model) -> dict:
        path = self.folder / STATE
        if not path.exists():
            return {}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if state["record"] != json.loads(json.dumps(self.record, default=str)):
                raise ValueError("its record differs from this run's")
            watched = (state.get("monitor", self.monitor), state.get("mode", self.mode))  # older states: unknown
            if watched != (self.monitor, self.mode):
                raise ValueError(f"its early stopping watched {watched[0]} ({watched[1]}), this run's "
                                 f"watches {self.monitor} ({self.mode})")
            self._build_optimizer(model)
            self._load(model, state["latest_file"])
            return state
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint: start again, say why
            warnings.warn(f"The checkpoint in {self.folder} could not be read ({type(error).__name__}: "
                          f"{error}); training starts again from the beginning and overwrites it.",
                          stacklevel=3)
            return {}

    @staticmethod
    def _build_optimizer(model) -> None:
        if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    def _load(self, model, name: str) -> None:
        path = self.folder / name
        if fsutil.safe_name(name) != name or not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        self._build_optimizer(model)
        model.load_weights(path)

    # -- during fit -------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.folder is None:
            raise RuntimeError("Call run.resume(model, epochs) before fit, and pass its result as initial_epoch.")
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {name: float(value) for name, value in (logs or {}).items()}
        state = self.state
        for name in sorted(set(state["history"]) | set(logs)):  # a value logged since resuming: None before
            state["history"].setdefault(name, [None] * state["epoch"]).append(logs.get(name))
        state["epoch"] = epoch + 1
        state["seconds"] += time.monotonic() - self._started
        self._started = time.monotonic()
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        with fsutil.temporary_folder(self.folder / name) as temporary:  # Keras wants names ending .weights.h5
            self.model.save_weights(temporary / name)
            os.replace(temporary / name, self.folder / name)
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"Early stopping watches {self.monitor!r}, which fit did not report "
                           f"(it reported {sorted(logs)}): pass validation_data to fit.")
        sign = 1 if self.mode == "min" else -1  # compare as if lower were better
        if state["best"] is None or sign * value < sign * state["best"] - self.min_delta:
            state.update(best=value, best_epoch=epoch + 1, best_file=name, wait=0)
        else:
            state["wait"] += 1
        state["stopped"] = state["wait"] >= self.patience
        state["latest_file"] = name
        fsutil.write_json_atomic(self.folder / STATE, state)
        for stale in self.folder.glob("epoch-*.weights.h5"):
            if stale.name not in (name, state["best_file"]):
                stale.unlink(missing_ok=True)
        if state["stopped"]:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.state.get("best_file"):
            self._load(self.model, self.state["best_file"])

    # -- after fit --------------------------------------------------------------------------
    @property
    def history(self) -> pd.DataFrame:
        """Every epoch of this run, across resumptions, one row each, counted from 1."""
        table = pd.DataFrame(self.state.get("history", {})).rename_axis("epoch")
        table.index += 1
        return table

    @property
    def best_epoch(self) -> int | None:
        return self.state.get("best_epoch")

    @property
    def minutes(self) -> float:
        """Training time over all sessions of this run."""
        return self.state.get("seconds", 0.0) / 60


def progress(images: int, every_batches: int | None = None):
    """A Keras callback drawing one progress bar per epoch, in images, with images per second."""
    from tqdm import tqdm  # plain text: it stays readable in executed notebooks

    class Progress(_callback_base()):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.steps = self.params.get("steps") or 1
            self.bar = tqdm(total=images, unit="img", desc=f"epoch {epoch + 1}", leave=True,
                            bar_format="{desc}: {n_fmt}/{total_fmt} images [{elapsed}, {rate_fmt}]{postfix}")

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.bar.update(min(images, round((batch + 1) * images / self.steps)) - self.bar.n)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.bar.set_postfix_str("  ".join(f"{name} {value:.3f}" for name, value in (logs or {}).items()
                                               if name in ("loss", "val_loss", "val_accuracy", "val_malignant_auc")))
            self.bar.close()

    return Progress()
