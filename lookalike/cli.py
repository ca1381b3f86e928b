"""``lookalike``: one command, a subcommand per job. Settings are built here, once."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from lookalike import signals
from lookalike.errors import EXIT_CODES, ExitCode, UserError
from lookalike.settings import LOCAL_HOST, LOG_LEVELS, MAX_PORT, Settings
from lookalike.stopping import Terminated, holding_stop_signals
from schema.events import MAX_SELLER_CHARS, MAX_VERSION, no_control_chars
from schema.versions import DEFAULT_LEASE_S, MAX_LEASE_S, shown


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2), without the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: float, kind: type[int] | type[float] = int,
              high: float | None = None) -> Any:
    """An argparse type: a number of ``kind`` that is at least ``low`` (and finite), and at
    most ``high`` when given."""

    def parse(text: str) -> float:
        value = kind(text)
        if not (low <= value < float("inf")):
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def _message(error: Any) -> str:
    """A pydantic error's message without the "Value error, " that pydantic puts before the
    message of a ``ValueError`` raised by a validator."""
    return str(error["msg"]).removeprefix("Value error, ")


def _finite(text: str) -> float:
    """An argparse type: a finite number (``nan`` was refused as "greater than or equal to
    0" by the filter, ``inf`` as not finite)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


_finite.__name__ = "float"  # argparse names the type in "invalid float value"


def _port(text: str) -> int:
    """An argparse type: a TCP port to listen on, 1 to 65535 (0 would pick one at random that
    nobody is told about; above 65535 failed in the library that binds it, after the model
    loaded: ``OverflowError``, a 20-line ``BrokerError`` after 15 s)."""
    value = int(text)
    if not 1 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to {MAX_PORT}, got {text}")
    return value


_port.__name__ = "int"  # argparse names the type in "invalid int value"


def folder(what: str = "a folder") -> Callable[[str], Path]:
    """An argparse type: a folder path, which must name ``what``: ``""`` would be ``Path('.')``,
    the working directory (an image root, train's ``--out``), and blanks name nothing."""

    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"must name {what}, not an empty path")
        return Path(text)

    return parse


def _version(text: str) -> int:
    """An argparse type: an event version, a whole number from 0 to 2**62 (the events')."""
    value = int(text)
    if not 0 <= value <= MAX_VERSION:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**62, got {text}")
    return value


def _seller(text: str) -> str:
    """An argparse type: a ``seller_id`` as events carry one."""
    if not 1 <= len(text) <= MAX_SELLER_CHARS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_SELLER_CHARS} characters")
    try:
        return no_control_chars(text, "a seller id")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SETTING_OPTIONS: tuple[tuple[str, str, str], ...] = (
    # (the option, its dest on the parsed arguments, the setting it overrides: group.field)
    ("--bootstrap-servers", "bootstrap_servers", "kafka.bootstrap_servers"),
    ("--topic", "topic", "kafka.topic"),
    ("--group-id", "group_id", "kafka.group_id"),
    ("--milvus-uri", "milvus_uri", "milvus.uri"),
    ("--collection", "collection", "milvus.collection"),
    ("--image-root", "image_root", "images.roots"),
    ("--metrics-host", "metrics_host", "ingest.metrics_host"),
    ("--host", "host", "serve.host"),
    ("--port", "port", "serve.port"),  # but broker's, which is its own
    ("-k", "k", "search.k"),
    ("-k", "compare_k", "search.compare_k"),
    ("--threshold", "compare_threshold", "search.compare_threshold"),
)
"""The options that override a setting, each checked by the setting's own bounds and, when
refused, named in the error as typed (``--threshold``, not ``search.compare_threshold``)."""


def _overrides(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """``group.field`` -> (the option, its value) for each :data:`SETTING_OPTIONS` given."""
    out: dict[str, tuple[str, Any]] = {}
    for option, dest, setting in SETTING_OPTIONS:
        value = getattr(args, dest, None)
        if value is not None and not (dest == "port" and args.command == "broker"):
            out[setting] = (option, value)
    return out


def _with(settings: Settings, overrides: dict[str, tuple[str, Any]]) -> Settings:
    """A copy of ``settings`` with the options' ``overrides`` (``_overrides``), validated by
    the settings' own bounds, so an option accepts exactly what its setting accepts; a value
    refused is a :class:`UserError` naming the option, or, where an option clashes with
    another setting (``--topic`` equal to ``kafka.dlq_topic``), that setting beside it."""
    groups: dict[str, dict[str, Any]] = {}
    for setting, (_, value) in overrides.items():
        group, _, field = setting.partition(".")
        groups.setdefault(group, {})[field] = value
    update: dict[str, BaseModel] = {}
    for group, values in groups.items():
        current = getattr(settings, group)
        try:
            update[group] = type(current).model_validate({**current.model_dump(), **values})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            setting = ".".join(str(x) for x in (group, *error["loc"][:1]))
            refused = _as_typed(error["input"])
            if setting in overrides:
                what = f"{overrides[setting][0]} ({refused})"
            else:
                given = ", ".join(f"{option} ({_as_typed(value)})"
                                  for name, (option, value) in overrides.items()
                                  if name.startswith(f"{group}."))
                what = f"{'.'.join(str(x) for x in (group, *error['loc']))} ({refused}) " \
                       f"beside {given}"
            raise UserError(f"invalid {what}: {_message(error)}") from None
    return settings.model_copy(update=update)


def _variable_of(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable a refused setting was read from (``LOOKALIKE_MILVUS__COLLECTION``
    for ``milvus.collection``), when that variable is set: a group given as one JSON object
    (``LOOKALIKE_MILVUS``) is named by its setting only."""
    name = "LOOKALIKE_" + "__".join(str(part) for part in loc[:2] if isinstance(part, str))
    return next((key for key in os.environ if key.upper() == name.upper()), None)


def _as_typed(value: Any) -> str:
    """A refused value as its option took it: a path as its text (not ``PosixPath(...)``)."""
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_as_typed(v) for v in value)}]"
    if isinstance(value, (str, Path)):
        return shown(str(value))  # a 100,000-character value is not echoed whole
    return repr(value)


def _connection_args(p: argparse.ArgumentParser, kafka: bool = True, milvus: bool = True,
                     default: Any = None) -> None:
    """``default``: ``argparse.SUPPRESS`` in a nested subcommand (``models drop``), so that
    its absent options do not replace the ones given before it (``models --milvus-uri X
    drop V``)."""
    if kafka:
        p.add_argument("--bootstrap-servers", default=default,
                       help="Kafka bootstrap servers (host:port,...)")
        p.add_argument("--topic", default=default, help="product events topic")
    if milvus:
        p.add_argument("--milvus-uri", default=default,
                       help="Milvus URI, or a .db path for Milvus Lite")
        p.add_argument("--collection", default=default,
                       help="base name: the alias searches use (no '__', not ending in "
                            "_state, _models or _lease: those name its collections)")


def _image_root_arg(p: argparse.ArgumentParser, text: str) -> None:
    """``--image-root DIR`` (repeatable; overrides ``LOOKALIKE_IMAGES__ROOTS``): where the
    catalog's local photo paths may point into, for every command that reads them."""
    p.add_argument("--image-root", action="append", type=folder(), default=None,
                   metavar="DIR", help=f"{text} (repeatable; default: LOOKALIKE_IMAGES__ROOTS)")


def _filter_args(p: argparse.ArgumentParser, k_setting: str) -> None:
    what = ("most similar products to verify first; every listing verified is returned"
            if k_setting == "compare_k" else "number of products to return")
    p.add_argument("-k", type=int, dest=k_setting, metavar="N",
                   help=f"{what} (default: settings search.{k_setting})")
    p.add_argument("--category", action="append", default=[], metavar="C",
                   help="category path; matches its sub-paths too (repeatable)")
    p.add_argument("--min-price", type=_finite, metavar="P", help="lowest price to return")
    p.add_argument("--max-price", type=_finite, metavar="P", help="highest price to return")
    p.add_argument("--currency", metavar="C",
                   help="only listings in this currency (ISO 4217, e.g. USD)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help=f"address to listen on (default {LOCAL_HOST})")
    p.add_argument("--port", type=int,
                   help="port to listen on (default 8080; 0: the OS picks a free one)")
    _image_root_arg(p, "folder whose catalog images the page may show and searches read "
                       "back to re-rank and verify")


def _match_arg(p: argparse.ArgumentParser, *, default: str | None = "exact",
               note: str = "") -> None:
    """``--match``; ``eval`` leaves it unset (None) so that it can refuse it with
    ``--task same-item``, which decides by each listing's evidence, not by an intent."""
    p.add_argument("--match", choices=("exact", "similar"), default=default,
                   help="exact: this item in this colour (default); similar: the same kind or "
                        f"style in any colour{note}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lookalike", description=__doc__, epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default=None, type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="consume product events into Milvus")
    _connection_args(p)
    p.add_argument("--group-id", help="Kafka consumer group (default: settings "
                   "kafka.group_id)")
    _image_root_arg(p, "folder that the events' local image paths may point into; others "
                       "are dead-lettered (path_not_allowed)")
    p.add_argument("--until-caught-up", action="store_true",
                   help="exit 0 once every assigned partition is consumed and written")
    p.add_argument("--metrics-port", type=_port,
                   help="serve Prometheus metrics on this port (/metrics)")
    p.add_argument("--metrics-host",
                   help=f"address the metrics listen on (default {LOCAL_HOST}; 0.0.0.0: "
                        "every interface)")

    p = sub.add_parser("publish", help="publish a catalog file as product.upserted events")
    _connection_args(p, milvus=False)
    p.add_argument("catalog", type=Path)
    p.add_argument("--version", type=_version, help="event version (default: now, in ms)")
    p.add_argument("--seller-id", type=_seller, default="catalog",
                   help="seller_id where a line has none")

    p = sub.add_parser("search", help="find products that look like an image")
    _connection_args(p, kafka=False)
    p.add_argument("image", type=Path, nargs="+",
                   help="a photo, or several views of the same item (searched together)")
    _image_root_arg(p, "folder the listings' local photos may be in, read to re-rank by "
                       "geometry (outside: not re-ranked)")
    _match_arg(p)
    _filter_args(p, "k")

    p = sub.add_parser("compare-prices", help="same or near-identical listings, cheapest first "
                                              "(prices are not converted: --currency)")
    _connection_args(p, kafka=False)
    p.add_argument("image", type=Path, nargs="?",
                   help="a photo of the item (or give --product-id instead)")
    p.add_argument("--product-id", metavar="ID",
                   help="a listed product: compare with its own photos instead of an image")
    _image_root_arg(p, "folder the listings' local photos may be in, read to verify each "
                       "listing")
    p.add_argument("--threshold", type=float, dest="compare_threshold", metavar="T",
                   help="minimum cosine similarity of a candidate to verify as the same item "
                        "(default: search.compare_threshold)")
    _filter_args(p, "compare_k")

    p = sub.add_parser("demo", help="broker + embedded Milvus + a catalog, end to end")
    _connection_args(p)
    p.add_argument("--catalog", type=Path,
                   help="catalog.jsonl (default: Fashion-MNIST with synthetic prices)")
    p.add_argument("--n-products", type=_at_least(1), default=1000,
                   help="Fashion-MNIST articles in the default catalog")
    _image_root_arg(p, "folder the catalog's photos may be in, besides the catalog's own")

    p = sub.add_parser("eval", help="retrieval quality: Recall@k and mAP@R of a protocol")
    p.add_argument("--gallery", type=Path, required=True,
                   help="gallery products, in the catalog format publish reads")
    p.add_argument("--queries", type=Path, required=True,
                   help='one {"image": PATH, "relevant": [product_id, ...]} per line')
    p.add_argument("--milvus-uri",
                   help="index into a temporary collection on this server "
                        "(default: a fresh embedded database)")
    p.add_argument("--cache", type=Path, default=Path("var/cache/embeddings.sqlite"),
                   help="embedding cache (by image content and model version)")
    p.add_argument("--no-cache", action="store_true", help="embed everything again")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--task", choices=("retrieval", "same-item"), default="retrieval",
                   help="retrieval: rank products (R@k, mAP@R); same-item: price comparison "
                        "lists the query's listings (precision, recall, false-match rate)")
    p.add_argument("--details", type=Path,
                   help="also write each query's outcome here, one JSON object per line: what "
                        "it ranked (retrieval) or listed with the evidence (same-item), what "
                        "it missed and what it listed wrongly")
    p.add_argument("--strict", action="store_true",
                   help="stop (exit 2) at the first photo that cannot be read or decoded, "
                        "instead of skipping it with a warning")
    _match_arg(p, default=None, note=" (--task retrieval only)")

    p = sub.add_parser("reindex", help="re-embed the catalog with the configured model, "
                       "then switch searches to it (no downtime)")
    _connection_args(p, kafka=False)
    _image_root_arg(p, "folder that stored local image paths may point into")
    p.add_argument("--no-switch", action="store_true",
                   help="build the new model's collections but keep serving the current one")
    p.add_argument("--allow-failures", action="store_true",
                   help="switch even when some products could not be re-embedded")
    p.add_argument("--max-passes", type=_at_least(1), default=10,
                   help="passes before giving up on a source that keeps changing")
    p.add_argument("--switch-changes", type=_at_least(0), default=50,
                   help="switch after a pass that changed at most this many products (or no "
                        "fewer than the pass before it); the catch-up pass after the switch "
                        "copies the rest (0: only after a pass that changed nothing)")
    p.add_argument("--settle-s", type=_at_least(0, float), default=2.0,
                   help="wait after the switch before the last catch-up pass")
    p.add_argument("--lease-s", type=_at_least(10, float, MAX_LEASE_S), default=DEFAULT_LEASE_S,
                   help="how long this run's lease lasts unless renewed (it renews it as it "
                        "works), 10 to 21600 (6 hours): a second reindex is refused "
                        "meanwhile, and the lease of a killed run blocks the next one at most "
                        "this long (`lookalike models unlock` removes it sooner)")

    p = sub.add_parser("models", help="which model version serves, and the others; "
                       "`models drop VERSION` removes an old one, `models unlock` a dead "
                       "run's lease")
    _connection_args(p, kafka=False)
    models_sub = p.add_subparsers(dest="models_command", metavar="{drop,unlock}")
    drop = models_sub.add_parser("drop", help="drop an old model version's collections and "
                                 "registry entry (not the serving one, nor one owed a catch-up)")
    _connection_args(drop, kafka=False, default=argparse.SUPPRESS)
    drop.add_argument("version", help="the model version (or physical collection) as "
                      "`lookalike models` lists it")
    drop.add_argument("--force", action="store_true",
                      help="also drop a version being built (status building): stop its "
                           "writers first; a running reindex holds a lease and is never "
                           "dropped")
    unlock_help = ("remove the reindex lease, naming its holder: only for a `lookalike "
                   "reindex` or `models drop` known to be dead (killed, its machine gone) whose "
                   "lease has not expired yet; a live run that loses it stops without switching")
    unlock = models_sub.add_parser("unlock", help=unlock_help, description=unlock_help)
    _connection_args(unlock, kafka=False, default=argparse.SUPPRESS)

    p = sub.add_parser("serve", help="the HTTP search API, search page and /metrics")
    _connection_args(p, kafka=False)
    _serve_args(p)

    p = sub.add_parser("run", help="ingest and the HTTP API in one process (Milvus Lite "
                       "allows one process per database file)")
    _connection_args(p)
    p.add_argument("--group-id", help="Kafka consumer group (default: settings "
                   "kafka.group_id)")
    _serve_args(p)

    p = sub.add_parser("broker", help="run the local Tansu broker in the foreground")
    p.add_argument("--port", type=_port, default=9092,
                   help="port the broker listens on (default %(default)s)")

    from lookalike import commands_train

    commands_train.add_parser(sub)
    return parser


HANDLERS = {
    "ingest": "lookalike.commands:ingest",
    "publish": "lookalike.commands:publish",
    "search": "lookalike.commands:search",
    "compare-prices": "lookalike.commands:compare_prices",
    "demo": "lookalike.commands:demo",
    "broker": "lookalike.cli:broker",
    "eval": "lookalike.evaluate:run_eval",
    "reindex": "lookalike.commands:reindex",
    "models": "lookalike.commands:models",
    "serve": "lookalike.commands_serve:serve",
    "run": "lookalike.commands_serve:run",
    "train": "lookalike.commands_train:train",
}
"""Subcommand -> ``module:function(settings, args) -> exit code``, imported when run (the
model and clients load only for the commands that need them; ``broker`` loads none)."""


STOP_GRACEFULLY = frozenset({"ingest", "run", "serve"})
"""The subcommands that SIGTERM and SIGINT stop gracefully (exit 0) at any point, start-up
included: a signal that comes while they start is held until they can stop
(lookalike/stopping.py)."""


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM's handler while a command runs: :class:`Terminated` in the main thread.
    ``broker`` and ``train`` set their own handler meanwhile, the :data:`STOP_GRACEFULLY`
    commands hold the signals from the start instead; this one covers the rest, and the start
    of ``broker`` and ``train`` before they set theirs."""
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    graceful = args.command in STOP_GRACEFULLY
    # Held from here: before the settings, the imports, Keras and the model.
    with holding_stop_signals() if graceful else nullcontext():
        return _main(args, graceful)


def _main(args: argparse.Namespace, graceful: bool) -> int:
    """The command ``args`` names; SIGTERM raises :class:`Terminated` while it runs, unless it
    is one of the ``graceful`` commands (:data:`STOP_GRACEFULLY`), whose held signal its own
    handler takes over."""
    prog = f"lookalike {args.command}"
    try:
        settings = Settings()
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        variable = _variable_of(error["loc"])
        print(f"{prog}: error: invalid LOOKALIKE_ setting {'.'.join(map(str, error['loc']))}: "
              f"{_message(error)}{f' (from {variable})' if variable else ''}", file=sys.stderr)
        return ExitCode.USAGE
    except SettingsError as exc:  # a list or object setting that is not JSON
        print(f"{prog}: error: invalid LOOKALIKE_ setting: {exc} (lists and objects are JSON, "
              "e.g. LOOKALIKE_IMAGES__ROOTS='[\"/data/images\"]')", file=sys.stderr)
        return ExitCode.USAGE
    logging.basicConfig(
        level=args.log_level or settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("kafka", "urllib3", "absl", "tensorflow", "faiss", "milvus_lite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python logs every refused connection as an ERROR (a dozen lines a second while a
    # broker is down), milvus-lite a traceback when another process holds the database: the
    # commands report both themselves, in one line (lookalike.app.open_store, create_topics).
    # pymilvus' own loggers are set where it is imported (store.client).
    for chatty in ("kafka.net", "milvus_lite.server_manager"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)
    try:
        settings = _with(settings, _overrides(args))
        module, _, name = HANDLERS[args.command].partition(":")
        handler = getattr(importlib.import_module(module), name)  # heavy imports: only now
        with nullcontext() if graceful else signals.handling(_terminate, [signal.SIGTERM]):
            return int(handler(settings, args))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM where no handler stops gracefully
        terminated = isinstance(exc, Terminated)
        print(f"{prog}: error: stopped by {'SIGTERM' if terminated else 'SIGINT'} before it "
              "finished", file=sys.stderr)
        return int(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED)
    except Exception as exc:
        from lookalike.app import explain

        failure = explain(exc)
        if failure is None:
            raise  # a bug: keep its traceback
        # one line whatever the message holds (a decoder's error may end in a newline)
        print(f"{prog}: error: {' '.join(str(failure).split())}", file=sys.stderr)
        return int(failure.code)
    finally:
        app = sys.modules.get("lookalike.app")  # imported by every command that opens a store
        if app is not None:
            app.close_stores()


def broker(_settings: Settings, args: argparse.Namespace) -> int:
    from lookalike.broker import run_in_foreground

    return run_in_foreground(args.port)
