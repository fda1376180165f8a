"""The one helper that keeps TensorFlow's start-up lines and library warnings off the terminal."""

import os
import sys
import warnings

from training.quiet import quiet_stderr


def test_file_descriptor_2_and_warnings_are_silent_inside_and_restored_after(capfd):
    with quiet_stderr():
        os.write(2, b"I0000 oneDNN custom operations are on\n")  # what TensorFlow's C++ writes
        warnings.warn("a converter's notice", FutureWarning)
    print("the error line", file=sys.stderr)
    assert capfd.readouterr().err == "the error line\n"
