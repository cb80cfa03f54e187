"""lesionlib.checkpoints: a training run resumes after a kill, stops early across resumptions,
and never trusts a half-written or foreign checkpoint. Real Keras models, real processes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lesionlib import checkpoints
from lesionlib.tfutil import import_tensorflow

REPOSITORY = Path(__file__).resolve().parents[1]

# Trains a small Keras model for EPOCHS epochs in a fresh process; KILL_AT=n kills it (SIGKILL)
# as epoch n begins, KILL_IN_SAVE=n kills it halfway through writing epoch n's checkpoint;
# MODEL=mobilenet fine-tunes the top block of a small MobileNet V2, as notebook 03 does.
CHILD = r"""
import json, os, signal, sys
import numpy as np
from lesionlib.tfutil import import_tensorflow
import_tensorflow()
import keras
from lesionlib import checkpoints

folder, epochs = sys.argv[1], int(sys.argv[2])
kill_at, kill_in_save = int(os.environ.get("KILL_AT", 0)), int(os.environ.get("KILL_IN_SAVE", 0))
rng = np.random.default_rng(0)
keras.utils.set_random_seed(0)
if os.environ.get("MODEL") == "mobilenet":  # notebook 03's fine-tuning, small: the top block unfrozen
    x = rng.uniform(size=(32, 32, 32, 3)).astype("float32")
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                          pooling="avg", weights=None)
    base.trainable = True
    for layer in base.layers[:base.layers.index(base.get_layer("block_16_expand"))]:
        layer.trainable = False
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(base(inputs, training=False)))
else:
    x = rng.normal(size=(64, 8)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
y = rng.integers(0, 3, len(x))
model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
saves = 0
save_weights = model.save_weights
def save_then_maybe_die(path, *args, **kwargs):
    global saves
    saves += 1
    save_weights(path, *args, **kwargs)
    if saves == kill_in_save:
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
model.save_weights = save_then_maybe_die

class Killer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

run = checkpoints.Run(folder, {"recipe": "test"}, patience=100)
start = run.resume(model, epochs)
model.fit(x, y, validation_data=(x, y), epochs=epochs, initial_epoch=start, shuffle=False, verbose=0,
          callbacks=[run, Killer()])
print(json.dumps({"start": start, "loss": run.history["loss"].tolist(),
                  "weights": [w.tolist() for w in model.get_weights()]}))
"""


def _child(folder: Path, epochs: int, **options: int | str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **{name.upper(): str(value) for name, value in options.items()}}
    return subprocess.run([sys.executable, "-c", CHILD, str(folder), str(epochs)], cwd=REPOSITORY,
                          env=environment, capture_output=True, text=True, timeout=300, check=False)


def _state(folder: Path) -> dict:
    [state] = folder.glob(f"*/{checkpoints.STATE}")
    return json.loads(state.read_text())


def _result(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_a_killed_run_resumes_after_its_last_epoch_and_ends_like_an_uninterrupted_one(tmp_path):
    whole = _result(_child(tmp_path / "whole", 5))
    killed = _child(tmp_path / "killed", 5, kill_at=4)
    assert killed.returncode == -signal.SIGKILL
    assert _state(tmp_path / "killed")["epoch"] == 3
    resumed = _result(_child(tmp_path / "killed", 5))
    assert resumed["start"] == 3
    # unshuffled batches: the resumed run is the uninterrupted one, epoch for epoch
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-5)
    for mine, theirs in zip(resumed["weights"], whole["weights"]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_a_fine_tuning_killed_while_writing_a_checkpoint_resumes_from_the_epoch_before(tmp_path):
    killed = _child(tmp_path, 5, kill_in_save=3, model="mobilenet")
    assert killed.returncode == -signal.SIGKILL
    run_folder = next(tmp_path.iterdir())
    assert _state(tmp_path)["epoch"] == 2
    assert any(".lesionlib-" in path.name for path in run_folder.iterdir())  # the half-written temporary
    resumed = _result(_child(tmp_path, 5, model="mobilenet"))
    assert resumed["start"] == 2 and len(resumed["loss"]) == 5
    assert not any(".lesionlib-" in path.name for path in run_folder.iterdir())  # swept
    state = _state(tmp_path)  # only the last epoch and the best one are kept
    assert sorted(path.name for path in run_folder.glob("*.h5")) == sorted({state["latest_file"], state["best_file"]})
    assert state["latest_file"] == "epoch-0005.weights.h5"


def _model(learning_rate: float):
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy")
    return model


DATA = (np.eye(4, dtype="float32")[[0, 1, 2, 3] * 4], np.array([0, 1] * 8))


def _fit(run, model, epochs: int):
    start = run.resume(model, epochs)
    model.fit(*DATA, validation_data=DATA, epochs=epochs, initial_epoch=start, verbose=0, callbacks=[run])
    return start


def test_early_stopping_is_part_of_the_saved_state(tmp_path):
    # A learning rate of 0 never improves the validation loss: patience 2 stops after epoch 3.
    first = checkpoints.Run(tmp_path, {"lr": 0}, patience=2)
    _fit(first, _model(0.0), 10)
    assert len(first.history) == 3 and first.best_epoch == 1
    again = checkpoints.Run(tmp_path, {"lr": 0}, patience=2)
    assert _fit(again, _model(0.0), 10) == 10  # it had ended: nothing more is trained
    assert len(again.history) == 3


def test_early_stopping_can_watch_a_value_where_higher_is_better(tmp_path):
    # With this rate the validation accuracy goes 0.75, 1.0, 1.0, ...: "max" keeps epoch 2 and
    # stops two epochs later; "min" keeps epoch 1 and stops after epoch 3.
    ends = {}
    for mode in ("max", "min"):
        run = checkpoints.Run(tmp_path / mode, {"lr": 2.0}, monitor="val_accuracy", mode=mode, patience=2)
        model = _model(2.0)
        model.compile(model.optimizer, model.loss, metrics=["accuracy"])
        _fit(run, model, 8)
        ends[mode] = (run.best_epoch, len(run.history))
    assert ends == {"max": (2, 4), "min": (1, 3)}
    with pytest.raises(ValueError, match="'min' or 'max'"):
        checkpoints.Run(tmp_path, {}, mode="maximum")


def test_a_run_resumed_to_watch_something_else_starts_again(tmp_path):
    # The best so far was a loss: compared with an AUC it would mean nothing.
    _fit(checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100), _model(0.5), 2)
    model = _model(0.5)
    model.compile(model.optimizer, model.loss, metrics=["accuracy"])
    again = checkpoints.Run(tmp_path, {"lr": 0.5}, monitor="val_accuracy", mode="max", patience=100)
    with pytest.warns(UserWarning, match=r"watched val_loss \(min\).*val_accuracy \(max\).*starts again"):
        assert again.resume(model, 3) == 0


def test_a_value_logged_only_after_resuming_is_missing_before(tmp_path):
    _fit(checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100), _model(0.5), 2)
    model = _model(0.5)
    model.compile(model.optimizer, model.loss, metrics=["accuracy"])  # a metric more, the same run
    run = checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100)
    assert _fit(run, model, 4) == 2
    assert run.history["val_accuracy"].isna().tolist() == [True, True, False, False]
    assert run.history["val_loss"].notna().all()
    fewer = checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100)  # and the other way: no longer logged
    assert _fit(fewer, _model(0.5), 5) == 4
    assert fewer.history["val_accuracy"].isna().tolist() == [True, True, False, False, True]


def test_the_best_epoch_is_put_back_at_the_end(tmp_path):
    run = checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100)
    model = _model(0.5)
    _fit(run, model, 4)
    best = tmp_path / run.folder.name / f"epoch-{run.best_epoch:04d}.weights.h5"
    reference = _model(0.5)
    reference.load_weights(best)
    for mine, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_another_record_starts_another_run_and_the_first_one_is_kept(tmp_path):
    _fit(checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100), _model(0.5), 2)
    other = checkpoints.Run(tmp_path, {"lr": 0.1}, patience=100)
    assert _fit(other, _model(0.1), 2) == 0
    assert len(list(tmp_path.glob(f"*/{checkpoints.STATE}"))) == 2
    back = checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100)
    assert back.resume(_model(0.5), 3) == 2


def test_an_unreadable_checkpoint_is_reported_and_training_starts_again(tmp_path):
    run = checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100)
    _fit(run, _model(0.5), 2)
    (run.folder / run.state["latest_file"]).write_bytes(b"not hdf5")
    again = checkpoints.Run(tmp_path, {"lr": 0.5}, patience=100)
    with pytest.warns(UserWarning, match="could not be read.*starts again"):
        assert again.resume(_model(0.5), 3) == 0


def test_fit_without_resume_says_what_to_do(tmp_path):
    model = _model(0.5)
    with pytest.raises(RuntimeError, match=r"run.resume\(model, epochs\)"):
        model.fit(*DATA, validation_data=DATA, epochs=1, verbose=0,
                  callbacks=[checkpoints.Run(tmp_path, {}, patience=1)])


def test_progress_counts_every_image_once_per_epoch(capsys):
    model = _model(0.5)
    bar = checkpoints.progress(len(DATA[0]))
    model.fit(*DATA, batch_size=5, epochs=2, verbose=0, callbacks=[bar])
    assert bar.bar.n == len(DATA[0])
    assert "16/16 images" in capsys.readouterr().err
