"""Structure checks for the Docker deployment in docker/ (no Docker engine is needed or used).

docker/compose.yaml is validated against the Compose Specification JSON schema
(tests/data/compose-spec.json, see tests/data/README.md) and then checked for what the deployment
is meant to do: Kafka in KRaft mode, topics created before the workers start, Milvus 2.6
standalone, GPU workers wired to both through LOOKALIKE_* settings. Nothing here starts a
container: these tests cannot tell that the images run, only that the files say the right thing.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator, ValidationError

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
ENV_EXAMPLE = DOCKER / ".env.example"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"

LONG_RUNNING = ("kafka", "etcd", "minio", "milvus", "ingest")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err} (Compose interpolation).
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


# --- helpers -----------------------------------------------------------------------------------


def resolve(value: Any) -> str:
    """``value`` as Compose renders it with no variables set: every ``${VAR:-x}`` becomes ``x``."""

    def default(match: re.Match[str]) -> str:
        if match.group("op") in (":-", "-"):
            return match.group("arg")
        return ""

    return _INTERPOLATION.sub(default, str(value)).replace("$$", "$")


def variables(node: Any) -> Iterator[tuple[str, str | None]]:
    """``(name, default)`` for each interpolation in the strings of a loaded YAML document.

    ``default`` is None when there is none. Comments are not part of the loaded document.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            yield from variables(key)
            yield from variables(value)
    elif isinstance(node, list):
        for item in node:
            yield from variables(item)
    elif isinstance(node, str):
        for match in _INTERPOLATION.finditer(node.replace("$$", "")):
            has_default = match.group("op") in (":-", "-")
            yield match.group("name"), match.group("arg") if has_default else None


def env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, list or mapping form, with defaults resolved."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: resolve(value) for key, value in raw.items()}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``"NAME://host:port,..."`` -> ``{NAME: (host, port)}``."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment line inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft7Validator:
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


# --- schema validation -------------------------------------------------------------------------


def test_schema_is_the_draft07_compose_specification(schema: dict[str, Any]) -> None:
    assert "draft-07" in schema["$schema"]
    assert schema["title"] == "Compose Specification"
    Draft7Validator.check_schema(schema)
    # The parts this file relies on are really there, not a stub schema.
    assert {"service", "deployment", "devices", "healthcheck"} <= set(schema["definitions"])
    assert schema["additionalProperties"] is False
    assert "^[a-zA-Z0-9._-]+$" in schema["properties"]["services"]["patternProperties"]


def test_compose_file_validates_against_the_schema(
    validator: Draft7Validator, compose: dict[str, Any]
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    messages = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    assert not messages, "\n".join(messages)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for key in parents:
        doc = doc[key]
    doc[last] = value


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # a key the spec does not define on a service
        ("services/kafka/restart_policy", "always"),
        # wrong types
        ("services/ingest/deploy/replicas", ["2"]),
        ("services/ingest/stop_grace_period", 75),
        ("services/milvus/ports", "19530:19530"),
        ("services/etcd/healthcheck/retries", {"count": 3}),
        # an enum violation
        ("services/ingest/depends_on/kafka", {"condition": "service_ready"}),
        # a GPU reservation without its required capabilities
        ("services/ingest/deploy/resources/reservations/devices", [{"driver": "nvidia"}]),
        # a top-level key that is neither defined nor an x- extension
        ("servics", {}),
        # a service name outside ^[a-zA-Z0-9._-]+$
        ("services/bad name", {"image": "busybox"}),
    ],
)
def test_validation_rejects_broken_documents(
    validator: Draft7Validator, compose: dict[str, Any], path: str, value: Any
) -> None:
    broken = copy.deepcopy(compose)
    _set(broken, path, value)
    with pytest.raises(ValidationError):
        validator.validate(broken)
    # It fails because of this change and nothing else: one error, on the changed key, inside
    # the new value, or on a parent that holds it.
    (error,) = validator.iter_errors(broken)
    location = "/".join(map(str, error.absolute_path))
    related = (location, path) if len(location) > len(path) else (path, location)
    assert not location or related[0] == related[1] or related[0].startswith(f"{related[1]}/")


# --- Kafka -------------------------------------------------------------------------------------


def test_kafka_runs_in_kraft_mode_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    assert not [name for name in services if "zookeeper" in name.lower()]
    assert not [s for s in services.values() if "zookeeper" in str(s.get("image", "")).lower()]

    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    e = env(kafka)
    assert not [key for key in e if "ZOOKEEPER" in key]
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}

    # controller.quorum.voters names this node on its controller listener.
    node_id = int(e["KAFKA_NODE_ID"])
    (voter,) = e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    voter_id, _, voter_address = voter.partition("@")
    assert int(voter_id) == node_id
    voter_host, _, voter_port = voter_address.rpartition(":")
    assert voter_host == "kafka"
    bound = listeners(e["KAFKA_LISTENERS"])
    assert e["KAFKA_CONTROLLER_LISTENER_NAMES"] in bound
    assert bound[e["KAFKA_CONTROLLER_LISTENER_NAMES"]][1] == int(voter_port)

    # The image formats storage with CLUSTER_ID: a base64url-encoded UUID (22 characters).
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", e["CLUSTER_ID"])
    assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert e["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_kafka_has_internal_and_host_listeners(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    e = env(kafka)
    bound = listeners(e["KAFKA_LISTENERS"])
    advertised = listeners(e["KAFKA_ADVERTISED_LISTENERS"])
    internal = e["KAFKA_INTER_BROKER_LISTENER_NAME"]
    controller = e["KAFKA_CONTROLLER_LISTENER_NAMES"]

    assert advertised[internal] == ("kafka", bound[internal][1])
    assert controller not in advertised
    protocol_map = e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(item.split(":") for item in protocol_map.split(","))
    assert set(protocols) == set(bound)

    # A host listener: advertised with a host-reachable name and published on that port.
    (host_name,) = set(bound) - {internal, controller}
    host, port = advertised[host_name]
    assert host != "kafka"
    published = [resolve(p).rsplit(":", 2) for p in kafka["ports"]]
    assert [str(port), str(bound[host_name][1])] in [p[-2:] for p in published]
    # The controller and internal listeners are not published.
    targets = {int(p[-1]) for p in published}
    assert bound[controller][1] not in targets
    assert bound[internal][1] not in targets


def test_kafka_healthcheck_uses_the_kafka_scripts(services: dict[str, dict[str, Any]]) -> None:
    check = services["kafka"]["healthcheck"]
    test = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
    assert "/opt/kafka/bin/kafka-" in test
    assert "localhost:9092" in test


def _partitions(command: str, topic: str) -> int:
    match = re.search(rf"--topic {re.escape(topic)}\s+--partitions (\d+)", resolve(command))
    assert match, f"no --partitions for {topic}"
    return int(match.group(1))


def test_init_service_creates_both_topics(services: dict[str, dict[str, Any]]) -> None:
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init.get("restart") == "no"
    command = "\n".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    command = command.replace("\\\n", " ")  # join shell continuation lines

    worker = env(services["ingest"])
    topic, dlq = worker["LOOKALIKE_KAFKA__TOPIC"], worker["LOOKALIKE_KAFKA__DLQ_TOPIC"]
    assert (topic, dlq) == ("catalog.products", "catalog.products.dlq")
    for name in (topic, dlq):
        assert re.search(rf"--create --if-not-exists\s+--topic {re.escape(name)}\s", command)
    assert command.count("--create") == 2

    partitions = _partitions(command, topic)
    assert partitions == 12
    assert int(worker["LOOKALIKE_KAFKA__PARTITIONS"]) == partitions
    assert _partitions(command, dlq) >= 1


# --- Milvus ------------------------------------------------------------------------------------


def test_milvus_is_2_6_standalone_with_etcd_and_minio(services: dict[str, dict[str, Any]]) -> None:
    milvus = services["milvus"]
    assert re.fullmatch(r"milvusdb/milvus:v2\.6\.\d+", milvus["image"]), milvus["image"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    e = env(milvus)
    assert e["ETCD_ENDPOINTS"] == "etcd:2379"
    assert e["MINIO_ADDRESS"] == "minio:9000"
    # Milvus and MinIO must agree on the credentials.
    minio = env(services["minio"])
    assert e["MINIO_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert e["MINIO_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]

    assert "http://localhost:9091/healthz" in milvus["healthcheck"]["test"]
    assert any(resolve(p).endswith(":19530") for p in milvus["ports"])
    assert milvus["depends_on"] == {
        "etcd": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
    }

    assert re.fullmatch(r"quay\.io/coreos/etcd:v3\.5\.\d+", services["etcd"]["image"])
    assert "-advertise-client-urls=http://etcd:2379" in services["etcd"]["command"]
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    for name in ("etcd", "minio"):
        assert services[name]["healthcheck"]["test"]


# --- ingest ------------------------------------------------------------------------------------


def test_ingest_is_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    ingest = services["ingest"]
    context = (COMPOSE_FILE.parent / ingest["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / ingest["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert ingest["command"] == ["ingest"]


def test_ingest_reserves_a_gpu_and_runs_replicas(services: dict[str, dict[str, Any]]) -> None:
    ingest = services["ingest"]
    deploy = ingest["deploy"]
    replicas = int(resolve(deploy["replicas"]))
    partitions = int(env(ingest)["LOOKALIKE_KAFKA__PARTITIONS"])
    assert 2 <= replicas <= partitions

    (device,) = deploy["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["count"] == 1
    assert "gpu" in device["capabilities"]

    # Replicas need generated names and must not fight over host ports.
    assert "container_name" not in ingest
    assert "ports" not in ingest
    assert ingest["restart"] in ("unless-stopped", "always", "on-failure")


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_ingest_stops_gracefully(services: dict[str, dict[str, Any]]) -> None:
    ingest = services["ingest"]
    grace = _seconds(resolve(ingest["stop_grace_period"]))
    app_grace = float(env(ingest)["LOOKALIKE_INGEST__SHUTDOWN_GRACE_S"])
    # Docker must not SIGKILL before the worker's own shutdown deadline has passed.
    assert grace > app_grace >= 30
    assert ingest.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_ingest_environment_points_at_kafka_and_milvus(services: dict[str, dict[str, Any]]) -> None:
    e = env(services["ingest"])
    required = {
        "LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS",
        "LOOKALIKE_KAFKA__TOPIC",
        "LOOKALIKE_KAFKA__DLQ_TOPIC",
        "LOOKALIKE_KAFKA__GROUP_ID",
        "LOOKALIKE_MILVUS__URI",
        "LOOKALIKE_IMAGES__ROOTS",
    }
    assert required <= set(e)
    for key in e:
        if key.startswith("LOOKALIKE_") and key != "LOOKALIKE_LOG_LEVEL":
            assert re.fullmatch(r"LOOKALIKE_[A-Z]+__[A-Z_]+", key), key

    kafka = env(services["kafka"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    internal = advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert e["LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS"] == f"{internal[0]}:{internal[1]}"
    assert e["LOOKALIKE_KAFKA__GROUP_ID"]

    uri = urlsplit(e["LOOKALIKE_MILVUS__URI"])
    assert (uri.scheme, uri.hostname, uri.port) == ("http", "milvus", 19530)
    assert uri.hostname in services


def test_ingest_environment_is_accepted_by_the_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_module = pytest.importorskip("lookalike.settings")
    import os

    for key in list(os.environ):
        if key.startswith("LOOKALIKE_"):
            monkeypatch.delenv(key)
    e = env(services["ingest"])
    for key, value in e.items():
        if key.startswith("LOOKALIKE_"):
            monkeypatch.setenv(key, value)

    # The nested groups forbid unknown keys, so a misspelt variable name fails here.
    settings = settings_module.Settings()
    assert settings.kafka.bootstrap_servers == e["LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings.kafka.topic == "catalog.products"
    assert settings.kafka.dlq_topic == "catalog.products.dlq"
    assert settings.milvus.uri == "http://milvus:19530"
    assert settings.ingest.shutdown_grace_s == float(e["LOOKALIKE_INGEST__SHUTDOWN_GRACE_S"])
    # ingest's metrics listen on loopback unless told: a worker's are scraped from the network
    assert settings.ingest.metrics_host == "0.0.0.0"

    # The image roots are exactly the read-only catalog mount, at the same path as on the host.
    (root,) = settings.images.roots
    (mount,) = [v for v in services["ingest"]["volumes"] if isinstance(v, dict)]
    assert mount["read_only"] is True
    assert Path(resolve(mount["target"])) == root
    assert mount["type"] == "volume"


def test_ingest_waits_for_its_dependencies(services: dict[str, dict[str, Any]]) -> None:
    assert services["ingest"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "kafka-init": {"condition": "service_completed_successfully"},
        "milvus": {"condition": "service_healthy"},
    }


def test_every_service_healthy_dependency_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec["condition"] == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), target
            if spec["condition"] == "service_completed_successfully":
                assert services[target].get("restart") == "no", target


def test_restart_policies_and_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in LONG_RUNNING:
        assert services[name]["restart"] in ("unless-stopped", "always"), name

    declared = set(compose["volumes"])
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if not source.startswith(("/", ".", "$")):
                used.add(source)
    assert used == declared
    for name in ("kafka", "etcd", "minio", "milvus"):
        assert services[name]["volumes"], f"{name} keeps its data in a named volume"


def test_env_example_lists_every_variable_with_the_compose_default(
    compose: dict[str, Any],
) -> None:
    defaults: dict[str, str | None] = {}
    for name, default in variables(compose):
        assert defaults.setdefault(name, default) == default, f"{name} has two defaults"

    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()

    assert set(defaults) == set(example)
    for name, default in defaults.items():
        assert example[name] == (default or ""), name


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_runs_lookalike_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    final = instructions[stages[-1] :]

    entrypoints = [json.loads(args) for keyword, args in final if keyword == "ENTRYPOINT"]
    commands = [json.loads(args) for keyword, args in final if keyword == "CMD"]
    users = [args for keyword, args in final if keyword == "USER"]
    assert entrypoints[-1] == ["lookalike"]
    assert commands[-1] == ["ingest"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_installs_every_project_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}

    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    copied = set()
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(src.rstrip("/") for src in args.split()[:-1])
    assert packages <= copied
    assert "pyproject.toml" in copied
    assert any(k == "RUN" and re.search(r"pip install \.(\s|$)", a) for k, a in instructions)
    # The `tf` extra is tensorflow-cpu on x86_64: the image must not use it.
    assert not any(k == "RUN" and "pip install .[tf]" in a for k, a in instructions)


def test_dockerignore_sits_where_buildkit_reads_it() -> None:
    assert not (DOCKER / ".dockerignore").exists(), "ignored when the context is the repo root"
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var/", "tests/"} <= patterns
