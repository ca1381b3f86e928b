"""The Keras backend's process-wide state: how it is imported, and JAX's compiled shapes on disk.

:func:`import_keras` imports Keras (and so its backend) with the native start-up notes
TensorFlow writes to the process' stderr left out; the rest of this module is the compile
cache.

On Keras' JAX backend every batch shape the embedder runs (:func:`embedding.embedder.
batch_buckets`) and every weight initialiser of the model is compiled by XLA when first used,
in each new process: on one H200 the ingest's warm-up took 97-125 s before the first batch
(docs/speed.md, "On a GPU"). JAX can keep those executables in a directory and load them in
the next process; :func:`enable_compile_cache` turns that on, for every compile (JAX's own
defaults skip compiles under a second, which are most of the initialisers). TensorFlow and
PyTorch have no such cache to turn on here (TF traces a shape in about a second); for them
this is a no-op.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def enable_compile_cache(directory: Path | None) -> Path | None:
    """Point JAX's persistent compilation cache at ``directory`` (created if missing).

    Returns the directory in use, or None: another backend, ``directory`` None, or a
    directory that cannot be written (a warning: only start-up speed is lost). Call it
    before the first model is built: compiles made before are not kept.
    """
    if directory is None:
        return None
    import keras

    if keras.config.backend() != "jax":
        return None
    directory = directory.expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"not writable: {directory}")
    except OSError as exc:
        log.warning("compile cache off: %s: %s", type(exc).__name__, exc)
        return None
    jax: Any = importlib.import_module("jax")  # typed loosely, as jax.config is untyped
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("JAX keeps compiled model shapes in %s", directory)
    return directory


START_UP_NOTES = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I0000 [0-9:. ]+ *\d+ (port|cpu_feature_guard)\.cc"
    r"|To enable the following instructions: .*rebuild TensorFlow)")
"""What TensorFlow's native code prints to stderr on import (oneDNN, the CPU instructions it
was not built for): absl's INFO lines, which ``TF_CPP_MIN_LOG_LEVEL`` no longer silences."""


NATIVE_LOG_LEVEL = "1"
"""``TF_CPP_MIN_LOG_LEVEL`` unless the environment sets it: TensorFlow's native INFO lines left
out once it runs (``generator_dataset_op.cc:213] Memory patch applied``, one per ``train``),
its warnings and errors kept. It must be set before TensorFlow is imported."""


def import_keras() -> None:
    """Import Keras, leaving out :data:`START_UP_NOTES`: they came before every command's own
    lines, twice, and made an error line look like one of many (:func:`import_quietly`);
    and with TensorFlow's later native INFO lines off (:data:`NATIVE_LOG_LEVEL`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", NATIVE_LOG_LEVEL)
    import_quietly("keras")


def import_quietly(module: str) -> None:
    """Import ``module`` with :data:`START_UP_NOTES` left out of what it writes to stderr.
    Native code writes to file descriptor 2, not to ``sys.stderr``, so that descriptor is
    pointed at a temporary file for the import; whatever else was written there (a missing
    library, a crash's last words) is passed on as it was. A no-op once it is imported."""
    if module in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            importlib.import_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines(True)
                    if not START_UP_NOTES.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
