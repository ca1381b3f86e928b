"""Fault harness: runs the real ``lookalike ingest`` CLI through failures and prints one line
per scenario with what was lost, duplicated, left behind, dead-lettered or fetched.

    python bench/faults.py                      # every scenario (~15-20 min on 2 cores)
    python bench/faults.py --only poison,ssrf   # a subset
    python bench/faults.py --kills 6 --json     # fewer kill -9 rounds, JSON lines

Scenarios (see docs/benchmarks.md for what each one measures and its goal):

* ``kills``   -- ``kill -9`` of ingest at random moments (split over both engines) while
  updates, price changes and delistings keep arriving; then one clean pass. Milvus contents
  are compared with the catalog's final state: lost, duplicated and orphan rows.
* ``milvus``  -- the harness's own Milvus server stopped for 30 s mid-ingest, then started.
* ``broker``  -- the broker taken away for 30 s mid-ingest (every connection reset and
  refused), then back with its log (see bench/loopback.py for why this is done in a proxy).
* ``poison``  -- valid events between hostile ones; the dead-letter topic is read back.
* ``ssrf``    -- image URLs aimed at loopback HTTP servers run here; counts what reached them.
* ``slow``    -- one image dribbled a byte every 2 s; time until the batch's other events are
  searchable.
* ``hung``    -- two events of 32 images on a host that accepts connections and never answers,
  then a canary whose image is on another host; time until the canary is written.

Everything runs on 127.0.0.1/::1: a Tansu broker and a Milvus server of its own (started and
stopped here), Milvus Lite files under ``var/faults/``, HTTP servers in this process. The
ingest processes are the CLI (``python -m lookalike ingest``) with the real model.
Exit status: 0 when every goal holds, 1 when one fails, 2 when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loopback import ImageServer, OutageProxy, SilentServer, wait_until  # noqa: E402
from bench.services import MilvusServer, milvus_available  # noqa: E402
from lookalike.broker import LocalBroker, tansu_binary, wait_for_port  # noqa: E402
from schema.events import image_key  # noqa: E402

SCENARIOS = ("kills", "milvus", "broker", "poison", "ssrf", "slow", "hung")
DEFAULT_LUMA = REPO.parent / "shared" / "data" / "luma"
OUTAGE_S = 30.0
INGEST_TIMEOUT_S = 300.0


# -- the catalog and what Milvus should hold --------------------------------------------------


@dataclass
class Product:
    product_id: str
    title: str
    category: str
    price: float
    currency: str
    images: list[str]
    """Absolute paths of the product's photos."""


def load_luma(root: Path) -> list[Product]:
    products = []
    for line in (root / "catalog.jsonl").read_text().splitlines():
        raw = json.loads(line)
        products.append(Product(
            raw["product_id"], raw["title"], raw["category"], float(raw["price"]),
            raw.get("currency", "USD"),
            [str((root / (i["path"] if isinstance(i, dict) else i)).resolve())
             for i in raw["images"]],
        ))
    return products


def upsert(p: Product, version: int, paths: list[str] | None = None,
           **override: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "product.upserted", "product_id": p.product_id, "version": version,
        "title": p.title, "category": p.category, "price": p.price, "currency": p.currency,
        "images": [{"path": i} for i in (paths or p.images)], "seller_id": "faults",
    }
    event.update(override)
    return event


@dataclass
class Expected:
    """The catalog's final state as the events published so far define it: the image keys
    each listed product must have in Milvus, and nothing else."""

    rows: dict[str, set[str]] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        pid = event["product_id"]
        if event["type"] == "product.upserted":
            self.rows[pid] = {image_key(i.get("path") or i.get("url")) for i in event["images"]}
        elif event["type"] == "product.delisted":
            self.rows.pop(pid, None)

    def compare(self, stored: list[dict[str, Any]]) -> dict[str, int]:
        seen = Counter(str(r["pk"]) for r in stored)
        have = {(str(r["product_id"]), str(r["image_key"])) for r in stored}
        want = {(pid, key) for pid, keys in self.rows.items() for key in keys}
        return {
            "products": len(self.rows),
            "rows_expected": len(want),
            "rows_stored": len(stored),
            "lost": len(want - have),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "orphans": len(have - want),
        }


# -- broker, Milvus and ingest processes -------------------------------------------------------


class Kafka:
    """Raw producer and dead-letter reader on one bootstrap address."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def publish(self, topic: str, messages: list[tuple[bytes | None, bytes]]) -> int:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=[self.bootstrap], acks="all",
                                 max_request_size=8 * 1024 * 1024, linger_ms=5)
        try:
            futures = [producer.send(topic, key=k, value=v) for k, v in messages]
            producer.flush(30)
            sent = 0
            for f in futures:
                with suppress(Exception):  # a record the broker refuses is reported, not fatal
                    f.get(10)
                    sent += 1
        finally:
            producer.close()
        return sent

    def publish_events(self, topic: str, events: list[dict[str, Any]]) -> None:
        self.publish(topic, [(e["product_id"].encode(), json.dumps(e).encode()) for e in events])

    def dead_letters(self, topic: str) -> list[tuple[bytes | None, str, bytes]]:
        """(key, reason, value) of every record on the dead-letter topic."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=[self.bootstrap], group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=4000)
        out = []
        try:
            for record in consumer:
                headers = dict(record.headers or [])
                reason = headers.get("lookalike.reason", b"").decode("utf-8", "replace")
                out.append((record.key, reason, record.value or b""))
        finally:
            consumer.close()
        return out


def stored_rows(uri: str, collection: str) -> list[dict[str, Any]]:
    """Every image row under the collection name searches use (Strong read)."""
    from store import MilvusStore

    try:
        store = MilvusStore.open(uri)
    except Exception as exc:  # the server may be away (outage scenario)
        print(f"  (could not connect to {uri}: {str(exc)[:200]})", file=sys.stderr)
        return []
    try:
        if not store.has_collection(collection):
            return []
        store.load([collection])  # a reopened Milvus Lite file starts released
        return store.query(collection, 'pk != ""', ["pk", "product_id", "image_key"],
                           consistency="Strong", limit=16383)
    except Exception as exc:  # the collection may not exist yet, or the server be away
        print(f"  (could not read {collection} at {uri}: {str(exc)[:200]})", file=sys.stderr)
        return []
    finally:
        store.close()


class Ingest:
    """One ``lookalike ingest`` process; its output goes to a log file."""

    def __init__(self, h: Harness, name: str, *, uri: str, collection: str, topic: str,
                 bootstrap: str | None = None, env: dict[str, str] | None = None,
                 until_caught_up: bool = True) -> None:
        h.runs[name] = h.runs.get(name, 0) + 1
        self.log_path = h.workdir / f"{name}-{h.runs[name]:02d}.log"
        cmd = [
            sys.executable, "-m", "lookalike", "ingest",
            "--bootstrap-servers", bootstrap or h.bootstrap, "--topic", topic,
            "--milvus-uri", uri, "--collection", collection, "--group-id", f"{topic}-group",
            "--image-root", str(h.luma),
        ]
        if until_caught_up:
            cmd.append("--until-caught-up")
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                    "LOOKALIKE_KAFKA__DLQ_TOPIC": f"{topic}.dlq", "LOOKALIKE_LOG_LEVEL": "INFO",
                    **(env or {})}
        self._log = self.log_path.open("wb")
        h.live.append(self)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        h.logs.append(self.log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def batches_written(self) -> int:
        return int(self.log_path.read_text(errors="replace").count(" batch="))

    def batch_lines(self) -> list[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if " batch=" in line]

    def applied(self) -> int:
        """Events applied, summed over the batch lines logged so far."""
        return sum(int(m.group(1)) for line in self.batch_lines()
                   if (m := re.search(r" applied=(\d+)", line)))

    def wait_for_first_batch(self, timeout_s: float) -> float | None:
        return wait_until(lambda: self.batches_written() > 0 or not self.alive(), timeout_s, 0.2)

    def kill9(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def wait(self, timeout_s: float) -> int | None:
        """Exit status, or None if it is still running after ``timeout_s`` (then stopped)."""
        try:
            rc: int = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return None
        self._log.close()
        return rc

    def stop(self) -> None:
        if self.alive():
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.run_id = time.strftime("%H%M%S")
        self.workdir = (args.workdir / self.run_id).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.luma: Path = args.luma.resolve()
        self.catalog = load_luma(self.luma)
        self.broker = LocalBroker(args.broker_port, log_path=self.workdir / "tansu.log")
        self.kafka = Kafka(self.broker.bootstrap_servers)
        self.milvus = MilvusServer(self.workdir / "milvus", args.milvus_port, args.etcd_port)
        self.milvus_up = False
        self.runs: dict[str, int] = {}
        self.logs: list[Path] = []
        self.live: list[Ingest] = []
        self.version = 1

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def engine_uri(self, engine: str, name: str) -> str:
        return self.milvus.uri if engine == "server" else str(self.workdir / f"{name}.db")

    def topic(self, name: str) -> str:
        return f"faults.{self.run_id}.{name}"

    def ensure_milvus(self) -> None:
        if not self.milvus_up:
            self.milvus.start()
            self.milvus_up = True

    def tracebacks(self, since: int) -> int:
        return sum(p.read_text(errors="replace").count("Traceback") for p in self.logs[since:])

    def image_settings(self) -> set[str]:
        from lookalike.settings import ImageSettings

        return set(ImageSettings.model_fields)

    def loopback_env(self) -> dict[str, str]:
        """Settings that let the CLI fetch from this harness's loopback servers, where the
        code under test has an egress policy (issue 7); empty where it has none."""
        fields = self.image_settings()
        env = {}
        if "allow_networks" in fields:
            env["LOOKALIKE_IMAGES__ALLOW_NETWORKS"] = '["127.0.0.0/8"]'
        return env

    def image_deadline_s(self) -> tuple[str, float]:
        from lookalike.settings import ImageSettings

        for name in ("deadline_s", "total_timeout_s", "fetch_deadline_s", "timeout_s"):
            info = ImageSettings.model_fields.get(name)
            if info is not None and isinstance(info.default, (int, float)):
                return name, float(info.default)
        return "none", 10.0


@dataclass
class Result:
    scenario: str
    ok: bool
    figures: dict[str, Any]

    def line(self) -> str:
        text = " ".join(f"{k}={v}" for k, v in self.figures.items())
        return f"faults {self.scenario:<14} {'PASS' if self.ok else 'FAIL'}  {text}"


def _finish(h: Harness, name: str, make: Callable[[], Ingest],
            first: Ingest | None = None) -> tuple[int | None, int]:
    """Wait for ``first`` (or a new ingest) to exit; restart it up to twice after a non-zero
    exit (so that what it did write can still be compared). Returns (rc, restarts)."""
    restarts = 0
    ingest = first or make()
    while True:
        rc = ingest.wait(INGEST_TIMEOUT_S)
        if rc in (0, None) or restarts >= 2:
            return rc, restarts
        restarts += 1
        print(f"  {name}: ingest exited {rc}; restarting ({restarts})", file=sys.stderr)
        ingest = make()


# -- scenarios ---------------------------------------------------------------------------------


def mutations(h: Harness, expected: Expected, n: int) -> list[dict[str, Any]]:
    """Upserts with fewer or reordered images, price changes and delistings: what makes
    orphans possible when a process dies between writes."""
    events = []
    for p in h.rng.sample(h.catalog, n):
        roll = h.rng.random()
        listed = p.product_id in expected.rows
        v = h.next_version()
        if roll < 0.2 and listed:
            event = {"type": "product.price_changed", "product_id": p.product_id, "version": v,
                     "price": round(p.price * h.rng.uniform(0.5, 1.5), 2),
                     "currency": p.currency}
        elif roll < 0.4 and listed:
            event = {"type": "product.delisted", "product_id": p.product_id, "version": v}
        else:
            k = h.rng.randint(1, len(p.images))
            event = upsert(p, v, h.rng.sample(p.images, k))
        expected.apply(event)
        events.append(event)
    return events


def scenario_kills(h: Harness, engine: str, kills: int) -> Result:
    since = len(h.logs)
    if engine == "server":
        h.ensure_milvus()
    name = f"kills-{engine}"
    uri, collection, topic = h.engine_uri(engine, name), f"faults_kills_{engine}", h.topic(name)
    expected = Expected()
    first = [upsert(p, h.next_version()) for p in h.catalog]
    for e in first:
        expected.apply(e)
    h.kafka.publish_events(topic, first)
    mid_ingest = 0
    for i in range(kills):
        if i:
            h.kafka.publish_events(topic, mutations(h, expected, 60))
        ingest = Ingest(h, name, uri=uri, collection=collection, topic=topic)
        # the model loads in 10-20 s here: wait for the first written batch, then pick the
        # moment, so that the kill lands while batches are in flight
        ingest.wait_for_first_batch(120)
        time.sleep(h.rng.uniform(0, h.args.kill_max_s))
        if ingest.alive():
            ingest.kill9()
            mid_ingest += 1
        else:
            ingest.wait(1)
    rc, restarts = _finish(h, name, lambda: Ingest(h, name, uri=uri, collection=collection,
                                                   topic=topic))
    figures = expected.compare(stored_rows(uri, collection))
    clean = figures["lost"] == figures["duplicated"] == figures["orphans"] == 0
    ok = restarts == 0 and rc == 0 and clean
    return Result(f"kills/{engine}", ok, {
        "kills": kills, "kills_mid_ingest": mid_ingest, **figures, "final_rc": rc,
        "restarts": restarts,
        "tracebacks": h.tracebacks(since),
    })


def scenario_milvus(h: Harness) -> Result:
    since = len(h.logs)
    h.ensure_milvus()
    uri, collection, topic = h.milvus.uri, "faults_outage", h.topic("milvus")
    expected = Expected()
    events = [upsert(p, h.next_version()) for p in h.catalog]
    for e in events:
        expected.apply(e)
    h.kafka.publish_events(topic, events)
    ingest = Ingest(h, "milvus", uri=uri, collection=collection, topic=topic)
    waited = wait_until(lambda: len(stored_rows(uri, collection)) >= 50 or not ingest.alive(),
                        180, 1.0)
    started = time.monotonic()
    h.milvus.stop()
    h.milvus_up = False
    time.sleep(OUTAGE_S)
    h.ensure_milvus()
    down_s = time.monotonic() - started
    alive_after = ingest.alive()
    rc, restarts = _finish(h, "milvus", lambda: Ingest(h, "milvus", uri=uri,
                                                      collection=collection, topic=topic),
                           first=ingest)
    figures = expected.compare(stored_rows(uri, collection))
    survived = alive_after and restarts == 0 and rc == 0
    ok = survived and figures["lost"] == figures["duplicated"] == 0
    return Result("milvus-down", ok, {
        "outage_s": f"{down_s:.0f}", "started_writing": waited is not None,
        "survived": survived, "restarts": restarts, "final_rc": rc,
        **{k: figures[k] for k in ("rows_expected", "lost", "duplicated", "orphans")},
        "tracebacks": h.tracebacks(since),
    })


def scenario_broker(h: Harness) -> Result:
    since = len(h.logs)
    tansu_port, proxy_port = h.args.broker_port + 1, h.args.broker_port + 2
    proxy = OutageProxy(proxy_port, tansu_port)
    proxy.restore()
    url = f"tcp://127.0.0.1:{tansu_port}"
    log = (h.workdir / "tansu-outage.log").open("ab")
    tansu = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url,
         "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}",
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=log, start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", tansu_port, 15)
        bootstrap = f"127.0.0.1:{proxy_port}"
        kafka = Kafka(bootstrap)
        uri, collection, topic = h.engine_uri("lite", "broker"), "faults_broker", h.topic("broker")
        expected = Expected()
        events = [upsert(p, h.next_version()) for p in h.catalog]
        for e in events:
            expected.apply(e)
        kafka.publish_events(topic, events)

        def make() -> Ingest:
            return Ingest(h, "broker", uri=uri, collection=collection, topic=topic,
                          bootstrap=bootstrap)

        ingest = make()
        ingest.wait_for_first_batch(180)
        proxy.outage()
        time.sleep(OUTAGE_S)
        proxy.restore()
        alive_after = ingest.alive()
        kafka.publish_events(topic, mutations(h, expected, 30))
        rc, restarts = _finish(h, "broker", make, first=ingest)
        figures = expected.compare(stored_rows(uri, collection))
    finally:
        proxy.stop()
        tansu.send_signal(signal.SIGTERM)
        try:
            tansu.wait(10)
        except subprocess.TimeoutExpired:
            tansu.kill()
        log.close()
    survived = alive_after and restarts == 0 and rc == 0
    ok = survived and figures["lost"] == figures["duplicated"] == 0
    return Result("broker-down", ok, {
        "outage_s": f"{OUTAGE_S:.0f}", "survived": survived, "restarts": restarts,
        "final_rc": rc,
        **{k: figures[k] for k in ("rows_expected", "lost", "duplicated", "orphans")},
        "tracebacks": h.tracebacks(since),
    })


def poison_corpus(h: Harness) -> tuple[list[tuple[bytes | None, bytes]], dict[str, str],
                                       list[Product]]:
    """(messages, bad key -> what is wrong with it, valid products). Every bad message has
    its own Kafka key (``poison-<n>``) so that its dead letter can be recognised."""
    p = h.catalog[0]
    root = h.luma
    bad: list[tuple[str, bytes]] = []

    def event(n: int, **override: Any) -> bytes:
        base = upsert(Product(f"poison-{n}", "Poison", "Test/Poison", 1.0, "USD",
                              [p.images[0]]), 1)
        base.update(override)
        return json.dumps({k: v for k, v in base.items() if v is not _DROP}).encode()

    raw: list[tuple[str, bytes | Callable[[int], bytes]]] = [
        ("not_json", b"{not json"),
        ("random_bytes", bytes(h.rng.getrandbits(8) for _ in range(200))),
        ("bad_utf8", b'\xff\xfe{"product_id": "x"}'),
        ("empty", b""),
        ("json_array", b"[1, 2, 3]"),
        ("json_string", b'"product"'),
        ("json_null", b"null"),
        ("deep_nesting_200kb", b"[" * 100_000 + b"]" * 100_000),
        ("deep_nesting_in_field", lambda n: event(n, attributes={"a": "x"})[:-1]
         + b', "extra": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        ("int_5000_digits", lambda n: event(n)[:-1] + b', "version": 1' + b"0" * 5000 + b"}"),
        ("huge_exponent", lambda n: event(n)[:-1].replace(b'"price": 1.0', b'"price": 1e999999')
         + b"}"),
        ("nan_price", lambda n: event(n).replace(b'"price": 1.0', b'"price": NaN')),
        ("malformed_1_5mb", b'{"product_id": "poison-big", "title": "' + b"x" * 1_500_000),
        ("title_1_5mb", lambda n: event(n, title="x" * 1_500_000)),
        ("version_string", lambda n: event(n, version="1000")),
        ("version_bool", lambda n: event(n, version=True)),
        ("version_negative", lambda n: event(n, version=-1)),
        ("version_2_63", lambda n: event(n, version=2**63)),
        ("schema_version_bool", lambda n: event(n, schema_version=True)),
        ("schema_version_2", lambda n: event(n, schema_version=2)),
        ("updated_at_1969", lambda n: event(n, version=_DROP, updated_at="1969-12-31T23:59:59Z")),
        ("updated_at_naive", lambda n: event(n, version=_DROP, updated_at="2026-01-01T00:00:00")),
        ("no_version", lambda n: event(n, version=_DROP)),
        ("no_title", lambda n: event(n, title=_DROP)),
        ("unknown_type", lambda n: event(n, type="product.exploded")),
        ("unknown_field", lambda n: event(n, colour="red")),
        ("price_string", lambda n: event(n, price="abc")),
        ("price_negative", lambda n: event(n, price=-1)),
        ("currency_lower", lambda n: event(n, currency="usd")),
        ("category_empty", lambda n: event(n, category="")),
        ("category_9_levels", lambda n: event(n, category="/".join("abcdefghi"))),
        ("title_nul", lambda n: event(n, title="a\u0000b")),
        ("product_id_spaces", lambda n: event(n, product_id="has spaces")),
        ("product_id_200", lambda n: event(n, product_id="p" * 200)),
        ("images_empty", lambda n: event(n, images=[])),
        ("images_33", lambda n: event(n, images=[{"path": f"{root}/images/{i}.jpg"}
                                                  for i in range(33)])),
        ("images_repeated", lambda n: event(n, images=[{"path": p.images[0]}] * 2)),
        ("image_ftp", lambda n: event(n, images=[{"url": "ftp://127.0.0.1/x.jpg"}])),
        ("image_traversal", lambda n: event(n, images=[{"path": f"{root}/../../etc/passwd"}])),
        ("image_outside_root", lambda n: event(n, images=[{"path": "/etc/hostname"}])),
        ("image_missing", lambda n: event(n, images=[{"path": f"{root}/images/nope.jpg"}])),
        ("image_bad_base64", lambda n: event(n, images=[{"data": "not base64!"}])),
        ("image_not_an_image", lambda n: event(n, images=[{
            "data": base64.b64encode(b"just text, not pixels").decode()}])),
        ("image_path_and_url", lambda n: event(n, images=[{"path": p.images[0],
                                                           "url": "http://127.0.0.1/x"}])),
        ("price_change_unlisted", lambda n: json.dumps({
            "type": "product.price_changed", "product_id": f"poison-{n}", "version": 5,
            "price": 3.0, "currency": "USD"}).encode()),
        ("key_mismatch", lambda n: event(n, product_id="someone-else")),
    ]
    for n, (label, make) in enumerate(raw):
        bad.append((label, make(n) if callable(make) else make))
    valid = h.rng.sample(h.catalog[1:], h.args.poison_valid)
    messages: list[tuple[bytes | None, bytes]] = []
    kinds: dict[str, str] = {}
    valid_msgs = [(v.product_id.encode(), json.dumps(upsert(v, 1)).encode()) for v in valid]
    for n, (label, payload) in enumerate(bad):
        key = f"poison-{n}"
        kinds[key] = label
        messages.append((key.encode(), payload))
        if valid_msgs:
            messages.append(valid_msgs.pop())
    messages.extend(valid_msgs)
    return messages, kinds, valid


class _Drop:
    """Marks a field to leave out of a poison event."""


_DROP: Any = _Drop()


def _some(labels: list[str], shown: int = 8) -> str:
    more = f",+{len(labels) - shown}" if len(labels) > shown else ""
    return ",".join(labels[:shown]) + more if labels else "-"


def scenario_poison(h: Harness) -> Result:
    since = len(h.logs)
    name = "poison"
    uri, collection, topic = h.engine_uri("lite", name), "faults_poison", h.topic(name)
    messages, kinds, valid = poison_corpus(h)
    sent = h.kafka.publish(topic, messages)
    no_key = upsert(h.catalog[-1], 1, product_id="poison-nokey")
    h.kafka.publish(topic, [(None, json.dumps(no_key).encode())])
    rc, restarts = _finish(h, name, lambda: Ingest(h, name, uri=uri, collection=collection,
                                                   topic=topic))
    rows = stored_rows(uri, collection)
    by_product: dict[str, set[str]] = {}
    for r in rows:
        by_product.setdefault(str(r["product_id"]), set()).add(str(r["image_key"]))
    indexed = sum(by_product.get(v.product_id) == {image_key(i) for i in v.images}
                  for v in valid)
    letters = h.kafka.dead_letters(f"{topic}.dlq")
    lettered = {k.decode(): reason for k, reason, _ in letters if k is not None}
    bad_lettered = sum(1 for key in kinds if lettered.get(key))
    missing = sorted(kinds[k] for k in kinds if not lettered.get(k))
    valid_ids = {v.product_id for v in valid}
    bad_indexed = sorted(pid for pid in by_product if pid not in valid_ids
                         and pid != "poison-nokey")
    nokey = ("dead-lettered" if any(k is None for k, _, _ in letters)
             else "indexed" if "poison-nokey" in by_product else "neither")
    reasons = Counter(reason for _, reason, _ in letters)
    ok = (indexed == len(valid) and bad_lettered == len(kinds) and restarts == 0 and rc == 0)
    return Result("poison", ok, {
        "valid_indexed": f"{indexed}/{len(valid)}",
        "bad_dead_lettered": f"{bad_lettered}/{len(kinds)}",
        "other": len(valid) - indexed + len(missing), "sent": f"{sent}/{len(messages)}",
        "ingest_exits": restarts + (rc not in (0, None)), "final_rc": rc, "no_key_event": nokey,
        "bad_indexed": len(bad_indexed),
        "not_dead_lettered": _some(missing),
        "reasons": ",".join(f"{r}:{n}" for r, n in sorted(reasons.items())) or "-",
        "tracebacks": h.tracebacks(since),
    })


def _jpeg(h: Harness) -> bytes:
    return Path(h.catalog[0].images[0]).read_bytes()


@contextmanager
def image_servers(h: Harness) -> Iterator[list[ImageServer]]:
    base = h.args.http_port
    image = _jpeg(h)
    servers = [ImageServer("127.0.0.1", base, image), ImageServer("127.0.0.1", base + 1, image)]
    with suppress(OSError):  # no IPv6 loopback here: the [::1] URLs then reach nothing
        servers.append(ImageServer("::1", base + 2, image))
    for s in servers:
        s.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def ssrf_urls(port: int) -> list[str]:
    """Loopback in every spelling we know; nothing here names a non-loopback address."""
    hostname = os.uname().nodename
    urls = [
        f"http://127.0.0.1:{port}/a.jpg",
        f"http://localhost:{port}/b.jpg",
        f"http://localhost.:{port}/c.jpg",
        f"http://LOCALHOST:{port}/d.jpg",
        f"http://[::1]:{port + 2}/e.jpg",
        f"http://0.0.0.0:{port}/f.jpg",
        f"http://127.1:{port}/g.jpg",
        f"http://127.0.0.2:{port}/h.jpg",
        f"http://2130706433:{port}/i.jpg",
        f"http://0x7f000001:{port}/j.jpg",
        f"http://0177.0.0.1:{port}/k.jpg",
        f"http://[::ffff:127.0.0.1]:{port}/l.jpg",
        f"http://[0:0:0:0:0:ffff:7f00:1]:{port}/m.jpg",
        f"http://user:pw@127.0.0.1:{port}/n.jpg",
        f"https://127.0.0.1:{port}/o.jpg",
        f"http://127.0.0.1:{port + 1}/redirect/{port}/p.jpg",
        f"http://localhost:{port + 1}/redirect/{port}/q.jpg",
    ]
    import socket

    with suppress(OSError):
        if socket.gethostbyname(hostname).startswith("127."):
            urls.append(f"http://{hostname}:{port}/r.jpg")
    return urls


def scenario_ssrf(h: Harness) -> Result:
    since = len(h.logs)
    name = "ssrf"
    uri, collection = h.engine_uri("lite", name), "faults_ssrf"
    with image_servers(h) as servers:
        urls = ssrf_urls(h.args.http_port)
        topic = h.topic(name)
        base = h.catalog[0]
        events = [upsert(base, 1, product_id=f"ssrf-{i}", images=[{"url": u}])
                  for i, u in enumerate(urls)]
        h.kafka.publish_events(topic, events)
        rc, restarts = _finish(h, name, lambda: Ingest(h, name, uri=uri, collection=collection,
                                                       topic=topic))
        fetched = sum(s.count() for s in servers)
        rows = stored_rows(uri, collection)
        indexed = len({r["product_id"] for r in rows})
        letters = h.kafka.dead_letters(f"{topic}.dlq")
        reasons = Counter(reason for _, reason, _ in letters)
        allowed = "n/a(no allow_networks setting)"
        allow_ok = True
        env = h.loopback_env()
        if env:
            before = fetched
            topic2 = h.topic("ssrf-allowed")
            h.kafka.publish_events(topic2, [upsert(base, 1, product_id="ssrf-allowed",
                                                   images=[{"url": urls[0]}])])
            _finish(h, "ssrf-allowed", lambda: Ingest(
                h, "ssrf-allowed", uri=h.engine_uri("lite", "ssrf-allowed"),
                collection="faults_ssrf_allowed", topic=topic2, env=env))
            got = stored_rows(h.engine_uri("lite", "ssrf-allowed"), "faults_ssrf_allowed")
            allow_ok = len(got) == 1
            requests = sum(s.count() for s in servers) - before
            allowed = f"{'indexed' if allow_ok else 'NOT-indexed'}(requests={requests})"
    ok = fetched == 0 and indexed == 0 and allow_ok and rc == 0
    return Result("ssrf", ok, {
        "urls": len(urls), "fetched": fetched, "indexed": indexed,
        "dead_lettered": len(letters),
        "reasons": ",".join(f"{r}:{n}" for r, n in sorted(reasons.items())) or "-",
        "allow_networks": allowed, "final_rc": rc, "restarts": restarts,
        "tracebacks": h.tracebacks(since),
    })


def scenario_slow(h: Harness) -> Result:
    since = len(h.logs)
    h.ensure_milvus()
    name = "slow"
    uri, collection, topic = h.milvus.uri, "faults_slow", h.topic(name)
    deadline_name, deadline_s = h.image_deadline_s()
    budget_s = deadline_s + 2.0
    wait_s = max(60.0, budget_s + 30.0)
    with image_servers(h) as servers:
        ingest = Ingest(h, name, uri=uri, collection=collection, topic=topic,
                        env=h.loopback_env(), until_caught_up=False)
        try:
            warm = h.catalog[-1]
            h.kafka.publish_events(topic, [upsert(warm, 1)])
            warmed = wait_until(lambda: _products(uri, collection) >= 1 or not ingest.alive(),
                                180, 0.5)
            others = h.rng.sample(h.catalog[:-1], 19)
            slow = upsert(h.catalog[0], 1, product_id="slow-image",
                          images=[{"url": f"http://127.0.0.1:{h.args.http_port}/slow/x.jpg"}])
            events = [slow, *(upsert(p, 1, p.images[:1]) for p in others)]
            published = time.monotonic()
            h.kafka.publish_events(topic, events)
            want = {p.product_id for p in others}
            took = wait_until(lambda: _products(uri, collection, want) >= len(want), wait_s, 0.25)
            if took is not None:
                took = time.monotonic() - published
            slow_requests = sum(s.count() for s in servers)
        finally:
            for s in servers:  # ends the dribble, so the stopping ingest is not held by it
                s.stop()
            ingest.stop()
    ok = warmed is not None and took is not None and took <= budget_s
    return Result("slow-image", ok, {
        "others_searchable_s": f"{took:.1f}" if took is not None else f">{wait_s:.0f}",
        "goal_s": f"{budget_s:.0f}", "deadline_setting": f"{deadline_name}={deadline_s:g}",
        "slow_requests": slow_requests, "tracebacks": h.tracebacks(since),
    })


def scenario_hung(h: Harness) -> Result:
    """A host that accepts connections and never answers took every fetch worker for a
    deadline per image, and other hosts' images queued behind it (a tester's canary became
    searchable after 81 s). Two events of 32 such images, then a canary on another host
    (127.0.0.1; the silent host is 127.0.0.2), all in one batch; Milvus Lite."""
    since = len(h.logs)
    name = "hung"
    uri, collection, topic = h.engine_uri("lite", name), "faults_hung", h.topic(name)
    deadline_name, deadline_s = h.image_deadline_s()
    goal_s = deadline_s + 5.0
    wait_s = max(150.0, 10 * deadline_s)
    silent = SilentServer("127.0.0.2")
    took = warmed = None
    failures = "-"
    canary_requests = 0
    try:
        with image_servers(h) as servers:
            ingest = Ingest(h, name, uri=uri, collection=collection, topic=topic,
                            env=h.loopback_env(), until_caught_up=False)
            try:
                h.kafka.publish_events(topic, [upsert(h.catalog[-1], 1)])
                warmed = wait_until(lambda: ingest.applied() >= 1 or not ingest.alive(),
                                    180, 0.5)
                stalls = [upsert(h.catalog[0], 1, product_id=f"hung-{e}",
                                 images=[{"url": f"{silent.base}/{e}-{i}.jpg"}
                                         for i in range(32)]) for e in range(2)]
                canary = upsert(h.catalog[1], 1, product_id="hung-canary", images=[
                    {"url": f"http://127.0.0.1:{h.args.http_port}/canary.jpg"}])
                published = time.monotonic()
                h.kafka.publish_events(topic, [*stalls, canary])
                took = wait_until(lambda: ingest.applied() >= 2 or not ingest.alive(),
                                  wait_s, 0.25)
                if took is not None:
                    took = time.monotonic() - published
                lines = ingest.batch_lines()[1:]
                failures = ",".join(m.group(1) for line in lines
                                    if (m := re.search(r"image_failures=(\S+)", line))) or "-"
                canary_requests = sum(s.count() for s in servers)
            finally:
                ingest.stop()
    finally:
        silent.stop()
    stored = {str(r["product_id"]) for r in stored_rows(uri, collection)}
    letters = h.kafka.dead_letters(f"{topic}.dlq")
    reasons = Counter(reason for _, reason, _ in letters)
    ok = (warmed is not None and took is not None and took <= goal_s
          and "hung-canary" in stored and reasons == {"all_images_failed": 2})
    return Result("hung-host", ok, {
        "canary_written_s": f"{took:.1f}" if took is not None else f">{wait_s:.0f}",
        "goal_s": f"{goal_s:.0f}", "deadline_setting": f"{deadline_name}={deadline_s:g}",
        "silent_connections": silent.accepted, "canary_requests": canary_requests,
        "image_failures": failures, "canary_stored": "hung-canary" in stored,
        "dead_letters": ",".join(f"{r}:{n}" for r, n in sorted(reasons.items())) or "-",
        "tracebacks": h.tracebacks(since),
    })


def _products(uri: str, collection: str, within: set[str] | None = None) -> int:
    ids = {str(r["product_id"]) for r in stored_rows(uri, collection)}
    return len(ids & within) if within is not None else len(ids)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios out of {','.join(SCENARIOS)}")
    p.add_argument("--kills", type=int, default=20,
                   help="kill -9 rounds in all, split over the engines (default 20)")
    p.add_argument("--engines", default="lite,server",
                   help="engines for the kill scenario (lite, server)")
    p.add_argument("--kill-max-s", type=float, default=6.0,
                   help="a kill lands uniformly within this many seconds after the process "
                   "logged its first written batch")
    p.add_argument("--poison-valid", type=int, default=40, help="valid events in the corpus")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--luma", type=Path, default=Path(os.environ.get("LOOKALIKE_LUMA",
                                                                    DEFAULT_LUMA)))
    p.add_argument("--workdir", type=Path, default=REPO / "var" / "faults")
    p.add_argument("--broker-port", type=int, default=19095,
                   help="the harness's Tansu; the broker scenario uses the next two ports")
    p.add_argument("--milvus-port", type=int, default=19581)
    p.add_argument("--etcd-port", type=int, default=18090,
                   help="the Milvus server's embedded etcd (clients; peers on the next port)")
    p.add_argument("--http-port", type=int, default=18000,
                   help="loopback HTTP servers on this port and the next two")
    p.add_argument("--json", action="store_true", help="one JSON object per scenario")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {sorted(unknown)}")
    return args


def _bind(fn: Callable[..., Result], *args: Any) -> Callable[[], Result]:
    return lambda: fn(*args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.luma / "catalog.jsonl").exists():
        print(f"faults: no Luma catalog under {args.luma} (--luma)", file=sys.stderr)
        return 2
    engines = [e for e in args.engines.split(",") if e]
    needs_server = {"milvus", "slow"} & set(args.only) or (
        "kills" in args.only and "server" in engines)
    if needs_server and not milvus_available():
        print("faults: the milvus and slow scenarios and server kills need a Milvus server "
              "package (set MILVUS_VENV, see scripts/milvus_server.sh)", file=sys.stderr)
        return 2
    h = Harness(args)
    results: list[Result] = []
    started = time.monotonic()
    def kill_live() -> None:
        for ingest in h.live:
            if ingest.alive():
                ingest.kill9()

    with ExitStack() as stack:
        h.broker.start()
        stack.callback(h.broker.stop)
        stack.callback(lambda: h.milvus.stop() if h.milvus_up else None)
        stack.callback(kill_live)
        runs: list[tuple[str, Callable[[], Result]]] = []
        if "kills" in args.only:
            per = max(1, args.kills // len(engines))
            runs += [(f"kills/{e}", _bind(scenario_kills, h, e, per)) for e in engines]
        table = {"milvus": scenario_milvus, "broker": scenario_broker, "poison": scenario_poison,
                 "ssrf": scenario_ssrf, "slow": scenario_slow, "hung": scenario_hung}
        runs += [(s, _bind(table[s], h)) for s in SCENARIOS if s in args.only
                 and s != "kills"]
        for label, run in runs:
            t0 = time.monotonic()
            try:
                result = run()
            except Exception as exc:  # one broken scenario must not hide the others' figures
                result = Result(label, False, {"error": repr(exc)[:300]})
            result.figures["seconds"] = f"{time.monotonic() - t0:.0f}"
            results.append(result)
            if args.json:
                print(json.dumps({"scenario": result.scenario, "ok": result.ok,
                                  **result.figures}), flush=True)
            else:
                print(result.line(), flush=True)
    failed = [r.scenario for r in results if not r.ok]
    print(f"faults: {len(results) - len(failed)}/{len(results)} scenarios met their goals in "
          f"{time.monotonic() - started:.0f}s; logs in {h.workdir}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
