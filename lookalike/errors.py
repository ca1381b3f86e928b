"""The one error a command ends with, and the exit codes of ``lookalike``.

A command that cannot do its job raises :class:`UserError` with one line that says what is
wrong and what to do; ``lookalike.cli.main`` prints it to stderr (no traceback) and exits with
its code. Client libraries' own exceptions (Kafka, Milvus, image decoding) are turned into a
``UserError`` in one place, ``lookalike.app.explain``; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the exit status of ``lookalike`` means (README, "Commands"; docs/operations.md)."""

    OK = 0
    FAILED = 1
    """The work started and failed (ingest stopped by an error, reindex refused to switch)."""
    USAGE = 2
    """A bad argument or input: a wrong option value, an unreadable file or image, a database
    or collection that does not exist. Running it again unchanged fails again."""
    MODEL_SWITCHED = 3
    """Ingest stopped because another model serves now (restart it with that model)."""
    UNAVAILABLE = 4
    """A service did not answer (Kafka broker, Milvus), the Milvus Lite database is held by
    another process, or another ``reindex`` / ``models drop`` holds the reindex lease: the same
    command may succeed later."""
    INTERRUPTED = 130
    """SIGINT (Ctrl-C) stopped a command before its work was done (train): 128 + 2, what a
    shell reports for a process that Ctrl-C ended."""
    TERMINATED = 143
    """SIGTERM stopped a command before its work was done (train): 128 + 15."""


EXIT_CODES = """exit codes: 0 ok; 1 the work failed; 2 bad argument or input (unreadable image,
missing database or collection); 3 ingest stopped because another model serves now; 4 a
service did not answer (Kafka broker, Milvus), the Milvus Lite database is held by another
process, or another reindex holds the lease; 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM
before it finished (ingest, serve and run stop gracefully with 0). Errors are one line on
stderr."""


class UserError(Exception):
    """A failure to print as one line on stderr, with the exit code it ends with."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code
