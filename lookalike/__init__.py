"""The ``lookalike`` command line and settings."""
