"""The HTTP face of Lookalike: a FastAPI app over ``ProductSearch``, its search page, and the
Prometheus metrics of search and ingest. Everything heavy is built in ``lookalike/app.py`` and
handed to :func:`serve.api.create_app`."""
