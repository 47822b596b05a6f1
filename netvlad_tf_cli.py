"""The `netvlad-tf` console script: quiets TensorFlow's C++ start-up lines, then runs the CLI.

It lives outside the `netvlad_tf` package because importing the package imports TensorFlow,
and the log level has to be set before that. Only the command line does this; the library
leaves the user's logging alone.
"""

from __future__ import annotations

import os
import sys
import tempfile


def _start_tensorflow_quietly() -> None:
    """Imports TensorFlow and initialises its devices with native stderr captured; the
    capture is shown if that fails, so nothing is hidden from a broken install."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.constant(0)  # device discovery prints its own lines on first use
        except BaseException:
            os.dup2(saved_stderr, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


def run() -> None:
    """Console-script entry point of `netvlad-tf`."""
    _start_tensorflow_quietly()
    from netvlad_tf.cli import run as run_cli

    run_cli()


if __name__ == "__main__":
    run()
