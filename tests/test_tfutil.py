"""Keeping the C++ noise of TensorFlow and LiteRT out of a lesson's output."""

from __future__ import annotations

import os

from lesionlib.tfutil import native_output_filtered


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
