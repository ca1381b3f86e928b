"""What the Keras backend keeps between runs: JAX's compiled model shapes, on disk.

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
