"""Keeping the C++ noise of TensorFlow and LiteRT out of a lesson's output."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

from lesionlib import tfutil
from lesionlib.tfutil import _crash_log, native_output_filtered


def test_native_lines_are_filtered_and_the_rest_is_printed_after(capfd):
    with native_output_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(1, b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8\n")
        os.write(2, b"E0000 something went really wrong\n")
        os.write(1, b"a line C code printed\n")
    out, err = capfd.readouterr()
    assert "XNNPACK" not in out + err and "fully_quantize" not in out + err
    assert err.splitlines() == ["E0000 something went really wrong", "a line C code printed"]
    assert out == ""


def test_the_file_descriptors_are_restored_after_an_error(capfd):
    try:
        with native_output_filtered():
            os.write(2, b"printed before the error\n")
            raise RuntimeError
    except RuntimeError:
        pass
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines() == ["printed before the error", "after"]


def _import_in_a_fresh_process() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from lesionlib.tfutil import import_tensorflow; "
                           "import_tensorflow()"], capture_output=True, text=True, timeout=120)


def test_an_import_that_ended_its_process_is_reported_by_the_next_one():
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True).stdout.strip()
    left = _crash_log(ended)
    left.write_text("Illegal instruction: this CPU lacks AVX\n")
    try:
        result = _import_in_a_fresh_process()
        assert "An earlier import of TensorFlow ended its program" in result.stderr
        assert "this CPU lacks AVX" in result.stderr
        assert not left.exists()
    finally:
        left.unlink(missing_ok=True)


def test_an_import_running_in_another_process_is_left_alone():
    running = _crash_log(os.getpid())  # this process is alive: its import is still going on
    running.write_text("I0000 oneDNN custom operations are on\n")
    try:
        result = _import_in_a_fresh_process()
        assert result.returncode == 0
        assert "earlier import" not in result.stderr
        assert running.exists()
    finally:
        running.unlink(missing_ok=True)


def test_saving_a_model_prints_no_info_lines(tmp_path):
    """Notebook 03 saves its fine-tuned network: TensorFlow's INFO lines stay out of the lesson, even
    where logging shows INFO lines (as in a Jupyter kernel, whose root logger lets them through)."""
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO); "
            "from lesionlib.tfutil import import_tensorflow; tf = import_tensorflow(); "
            "module = tf.Module(); module.weight = tf.Variable(1.0); tf.saved_model.save(module, sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "saved")], capture_output=True, text=True,
                          timeout=300, check=True)
    assert (tmp_path / "saved" / "saved_model.pb").is_file()
    assert "Assets written" not in done.stdout + done.stderr


def test_converting_hides_the_converters_lines_and_frees_its_garbage(capfd):
    class Graph:
        """Stands for a converter's graphs: a reference cycle, freed only by a collection."""

    gc.disable()  # only converting() may collect
    try:
        with tfutil.converting():
            graph = Graph()
            graph.itself = graph
            alive = weakref.ref(graph)
            del graph
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        assert alive() is None
    finally:
        gc.enable()
    assert "XNNPACK" not in capfd.readouterr().err
