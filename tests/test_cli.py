"""The ``lookalike`` command as a user runs it: publish, ingest, search, compare-prices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lookalike.cli import build_parser, main
from tests.pipeline_support import write_image

REPO = Path(__file__).resolve().parent.parent


def test_parser_knows_every_subcommand() -> None:
    parser = build_parser()
    for argv in (["ingest", "--until-caught-up"], ["publish", "c.jsonl"], ["search", "x.jpg"],
                 ["compare-prices", "--product-id", "p"], ["demo"], ["broker"]):
        assert parser.parse_args(argv).command == argv[0]


def test_publish_reports_the_bad_lines_in_one_line_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "c.jsonl"
    catalog.write_text(
        '{"product_id": "a", "title": "A", "category": "X", "price": 1, "currency": "USD",'
        ' "images": ["a.jpg"]}\n'
        '{"product_id": "b", "title": "B", "category": "X", "price": -3, "currency": "USD",'
        ' "images": ["b.jpg"]}\n'
        "not json\n"
    )
    # An unreachable broker proves nothing was attempted: validation fails first.
    code = main(["publish", str(catalog), "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.splitlines()  # one line, naming each bad line (up to three)
    assert "2 invalid line(s): line 2: price" in line and "; line 3: invalid JSON" in line

    with catalog.open("a") as more:
        more.write("[1]\n" * 3)
    assert main(["publish", str(catalog), "--bootstrap-servers", "127.0.0.1:1"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "5 invalid line(s): line 2:" in line and line.endswith("; and 2 more")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lookalike", *args], cwd=env["WORKDIR"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.kafka
@pytest.mark.model
def test_publish_ingest_search_compare_from_the_command_line(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(6):
        write_image(images / f"p{i}.png", seed=900 + i, size=128)
        lines.append({"product_id": f"p{i}", "title": f"Thing {i}", "category": f"Shop/C{i % 2}",
                      "price": 10 + i, "currency": "USD", "images": [f"images/p{i}.png"],
                      "group_id": "g"})
    # The same photo listed by a second shop, cheaper: price comparison must find it.
    lines.append({**lines[3], "product_id": "p3-other", "price": 5, "seller_id": "shop2"})
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WORKDIR": str(tmp_path),
           "LOOKALIKE_KAFKA__TOPIC": f"cli-{unique}", "LOOKALIKE_KAFKA__DLQ_TOPIC": f"dlq-{unique}",
           "LOOKALIKE_KAFKA__GROUP_ID": f"cli-{unique}",
           "LOOKALIKE_KAFKA__SESSION_TIMEOUT_MS": "6000",
           "LOOKALIKE_IMAGES__ROOTS": json.dumps([str(tmp_path)])}
    common = ["--bootstrap-servers", bootstrap]
    milvus = ["--milvus-uri", str(tmp_path / "cli.db")]
    done = run_cli("publish", "catalog.jsonl", *common, env=env)
    assert done.returncode == 0, done.stderr
    done = run_cli("ingest", "--until-caught-up", *common, *milvus, env=env)
    assert done.returncode == 0, done.stderr
    assert "applied=7" in done.stderr

    done = run_cli("search", str(images / "p2.png"), "-k", "3", "--json", *milvus, env=env)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert hits[0]["product_id"] == "p2" and hits[0]["score"] > 0.99
    assert set(hits[0]) >= {"product_id", "score", "title", "category", "price", "currency",
                            "image_ref"}
    done = run_cli("search", str(images / "p2.png"), "--category", "Shop/C1", "--max-price", "12",
                   "--json", *milvus, env=env)
    assert done.returncode == 0, done.stderr
    assert {h["product_id"] for h in json.loads(done.stdout)} == {"p1", "p3-other"}

    two_views = [str(images / "p2.png"), str(images / "p1.png")]
    done = run_cli("search", *two_views, "-k", "2", "--json", *milvus, env=env)
    assert done.returncode == 0, done.stderr  # several views, one search: both found first
    assert {h["product_id"] for h in json.loads(done.stdout)} == {"p1", "p2"}
    done = run_cli("search", *[str(images / "p2.png")] * 17, *milvus, env=env)
    assert done.returncode == 2 and "at most 16 images" in done.stderr

    done = run_cli("compare-prices", "--product-id", "p3", "--json", *milvus, env=env)
    assert done.returncode == 0, done.stderr
    matches = json.loads(done.stdout)
    assert matches[0]["product_id"] == "p3-other" and matches[0]["price"] == 5

    done = run_cli("search", str(images / "nope.png"), *milvus, env=env)
    assert done.returncode == 2 and "no such image" in done.stderr
    done = run_cli("search", str(images / "p2.png"), "--min-price", "9", "--max-price", "1",
                   *milvus, env=env)
    assert done.returncode == 2 and "invalid filter" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_broker_command_stops_tansu_on_sigterm_and_sigint(sig: signal.Signals) -> None:
    """`kill` (a supervisor, CI) must not leave the tansu child running on its port."""
    from lookalike.broker import free_port, port_open

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lookalike", "broker", "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once tansu accepts connections
        assert "tansu listening" in line, line
        assert port_open("127.0.0.1", port)
        proc.send_signal(sig)
        assert proc.wait(timeout=4) == 0  # tansu saw SIGTERM (no 5 s wait, then SIGKILL)
        assert "stopping tansu" in proc.stdout.read()
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open("127.0.0.1", port), "tansu outlived the broker command"
    finally:
        if proc.poll() is None:
            proc.kill()
