"""Keep other libraries' noise off the user's terminal while TensorFlow works."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null, and ignore Python warnings, until the block ends.

    TensorFlow's C++ start-up lines (absl, oneDNN) go to file descriptor 2 whatever
    TF_CPP_MIN_LOG_LEVEL says, and converters raise numpy FutureWarnings that are not the user's
    to fix; silenced here, a failure still ends in the one error line printed after the block.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
