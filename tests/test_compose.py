"""Static checks of the docker-compose production stack (no Docker needed).

Parses docker-compose.yml, Dockerfile, .dockerignore and deploy/*.yaml and checks
that the services are wired to each other consistently and that the environment
handed to the Dagster containers is one lakebed actually understands.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DAGSTER_YAML = REPO / "deploy" / "dagster.yaml"
WORKSPACE_YAML = REPO / "deploy" / "workspace.yaml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

APP_DIR = "/opt/dagster/app"  # where the Dockerfile puts the repository
DAGSTER_HOME = "/opt/dagster/dagster_home"
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
EXPECTED_SERVICES = {
    "kafka",
    "minio",
    "minio-init",
    "postgres",
    "dagster-webserver",
    "dagster-daemon",
    "marquez",
    "marquez-web",
    "features",
    "metrics",
    "prometheus",
    "grafana",
}


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose-style interpolation ($$, ${VAR}, ${VAR:-default}, ${VAR-default}).

    Uses an empty environment by default so the result is what a fresh checkout
    gets from the defaults written in the compose file.
    """
    if not isinstance(value, str):
        return value
    env = env or {}

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?"):
            if not current:
                raise AssertionError(f"compose requires ${name}: {arg}")
            return current
        return current or ""

    return _VAR.sub(repl, value)


def service_env(service: dict[str, Any], *, raw: bool = False) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    out = {}
    for key, value in env.items():
        value = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        out[key] = value if raw else interpolate(value)
    return out


def published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from short or long port syntax."""
    pairs = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.add((int(interpolate(str(port["published"]))), int(port["target"])))
            continue
        spec = interpolate(str(port)).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:  # container port only: random host port
            continue
        pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def run_text(service: dict[str, Any]) -> str:
    return interpolate(f"{as_text(service.get('entrypoint'))} {as_text(service.get('command'))}")


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source, for short and long volume syntax."""
    mounts = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            mounts[vol["target"]] = vol.get("source", "")
        else:
            source, target = str(vol).split(":")[:2]
            mounts[target] = source
    return mounts


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def lakebed_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return service_env(services["dagster-webserver"])


@pytest.fixture(scope="module")
def dagster_yaml() -> dict[str, Any]:
    return yaml.safe_load(DAGSTER_YAML.read_text())


# --------------------------------------------------------------------------- services


def test_compose_spec_file_without_version_key(compose):
    assert "version" not in compose, "the compose spec has no `version:`; drop it"
    assert "x-lakebed-env" in compose, "the lakebed environment lives in the x-lakebed-env anchor"


def test_expected_services_exist(services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_every_service_has_an_image_or_build(services):
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), name


def test_kafka_runs_kraft_single_node(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = service_env(kafka)
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env.get("CLUSTER_ID"), "KRaft needs a cluster id to format the log dir"
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert any(v.startswith(f"{node_id}@kafka:") for v in voters)
    controller_listeners = set(env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    listener_names = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert controller_listeners <= listener_names
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert listener_names <= set(protocol_map)
    # Kafka data lives on a volume, at the log dir Kafka is told to use.
    assert volume_mounts(kafka).get(env["KAFKA_LOG_DIRS"]), "KAFKA_LOG_DIRS must be on a volume"


def _advertised(env: dict[str, str]) -> dict[str, str]:
    return {
        item.split("://")[0]: item.split("://")[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }


def test_kafka_host_listener_is_published(services):
    kafka = services["kafka"]
    advertised = _advertised(service_env(kafka))
    internal = service_env(kafka)["KAFKA_INTER_BROKER_LISTENER_NAME"]
    external = [addr for name, addr in advertised.items() if name != internal]
    assert external, "a listener for clients on the host is advertised"
    host, port = host_port(external[0])
    assert host == "localhost"
    assert port in {h for h, _ in published_ports(kafka)}


@pytest.mark.parametrize(
    ("service", "host", "container"),
    [
        ("dagster-webserver", 3000, 3000),
        ("minio", 9000, 9000),
        ("minio", 9001, 9001),
        ("marquez", 5000, 5000),
        ("marquez-web", 3001, 3000),
        ("features", 6566, 6566),
        ("prometheus", 9090, 9090),
        ("grafana", 3002, 3000),
    ],
)
def test_published_ports(services, service, host, container):
    assert (host, container) in published_ports(services[service])


def test_host_ports_do_not_clash(services):
    seen: dict[int, str] = {}
    for name, svc in services.items():
        for host, _ in published_ports(svc):
            assert host not in seen, f"host port {host} used by {seen.get(host)} and {name}"
            seen[host] = name


def test_minio_serves_data_with_console(services):
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio")
    text = run_text(minio)
    assert "server /data" in text and "--console-address :9001" in text
    assert volume_mounts(minio).get("/data")
    raw = service_env(minio, raw=True)
    assert raw["MINIO_ROOT_USER"].startswith("${MINIO_ROOT_USER")
    assert raw["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD")


def test_minio_init_creates_the_cold_bucket(services, lakebed_env):
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc")
    text = run_text(init)
    bucket = urlparse(lakebed_env["LAKEBED_COLD_ROOT"]).netloc
    assert bucket == "lakebed"
    assert re.search(rf"\bmc mb\b[^\n]*\S+/{bucket}\b", text), text
    assert "http://minio:9000" in text
    assert depends_on(init) == {"minio": "service_healthy"}
    assert init.get("restart", "no") == "no", "one-shot job"
    # It logs in with MinIO's root credentials, which are also lakebed's S3 keys.
    init_env, minio_env = service_env(init), service_env(services["minio"])
    assert init_env["MINIO_ROOT_USER"] == minio_env["MINIO_ROOT_USER"] == lakebed_env["AWS_ACCESS_KEY_ID"]
    assert (
        init_env["MINIO_ROOT_PASSWORD"]
        == minio_env["MINIO_ROOT_PASSWORD"]
        == lakebed_env["AWS_SECRET_ACCESS_KEY"]
    )


ROLE_PREFIXES = {"engineer": "lakebed/*", "model": "lakebed/cold/fv_*", "auditor": "lakebed/lineage/*"}


@pytest.mark.parametrize("role", sorted(ROLE_PREFIXES))
def test_minio_has_a_user_and_policy_per_role(services, role):
    init = services["minio-init"]
    text = run_text(init)
    assert f"mc admin user add local lakebed-{role}" in text
    assert "/policies/${role}.json" in text.replace("$$", "$") and "mc admin policy attach" in text
    assert any(v.endswith(":/policies:ro") and v.startswith("./deploy/minio") for v in init["volumes"])
    raw = service_env(init, raw=True)
    assert raw[f"MINIO_{role.upper()}_PASSWORD"].startswith(f"${{MINIO_{role.upper()}_PASSWORD"), "from .env"
    policy = json.loads((REPO / "deploy" / "minio" / f"{role}.json").read_text())
    objects = [s for s in policy["Statement"] if any(r.endswith("*") for r in s["Resource"])]
    assert [r.removeprefix("arn:aws:s3:::") for s in objects for r in s["Resource"]] == [ROLE_PREFIXES[role]]
    writes = {"s3:PutObject", "s3:DeleteObject"} & {a for s in policy["Statement"] for a in s["Action"]}
    assert bool(writes) == (role == "engineer"), "only engineers write"


def test_postgres_has_volume_and_matches_dagster_credentials(services, lakebed_env):
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert volume_mounts(pg).get("/var/lib/postgresql/data")
    assert "healthcheck" in pg
    env = service_env(pg)
    assert lakebed_env["DAGSTER_POSTGRES_HOST"] == "postgres"
    assert env["POSTGRES_USER"] == lakebed_env["DAGSTER_POSTGRES_USER"]
    assert env["POSTGRES_PASSWORD"] == lakebed_env["DAGSTER_POSTGRES_PASSWORD"]
    assert env["POSTGRES_DB"] == lakebed_env["DAGSTER_POSTGRES_DB"]


def test_marquez_stack(services):
    marquez, web, db = services["marquez"], services["marquez-web"], services["marquez-db"]
    assert marquez["image"] == "marquezproject/marquez:0.50.0"
    assert web["image"] == "marquezproject/marquez-web:0.50.0"
    web_env = service_env(web)
    assert web_env["MARQUEZ_HOST"] == "marquez"
    assert web_env["MARQUEZ_PORT"] == service_env(marquez)["MARQUEZ_PORT"] == "5000"
    m_env, db_env = service_env(marquez), service_env(db)
    assert m_env["POSTGRES_HOST"] == "marquez-db"
    assert m_env["POSTGRES_USER"] == db_env["POSTGRES_USER"]
    assert m_env["POSTGRES_PASSWORD"] == db_env["POSTGRES_PASSWORD"]
    assert m_env["POSTGRES_DB"] == db_env["POSTGRES_DB"]
    assert volume_mounts(db).get("/var/lib/postgresql/data")


def test_marquez_config_reads_db_credentials_from_env(compose, services):
    marquez = services["marquez"]
    target = service_env(marquez)["MARQUEZ_CONFIG"]
    mounted = {c["target"]: c["source"] for c in marquez.get("configs", []) if isinstance(c, dict)}
    assert target in mounted, "MARQUEZ_CONFIG must point at the mounted config"
    content = interpolate(compose["configs"][mounted[target]]["content"])
    config = yaml.safe_load(content)
    db = config["db"]
    assert db["password"] == "${POSTGRES_PASSWORD}"
    assert db["user"].startswith("${POSTGRES_USER")
    assert "${POSTGRES_HOST" in db["url"]
    assert config["server"]["applicationConnectors"][0]["port"].startswith("${MARQUEZ_PORT")
    assert config["search"]["enabled"] is False  # no OpenSearch in this stack


def test_depends_on_targets_and_conditions(services):
    for name, svc in services.items():
        for dep, condition in depends_on(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} health, it has no check"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is a one-shot job"


def test_long_running_services_have_healthchecks(services):
    for name in ("kafka", "minio", "postgres", "marquez-db", "marquez", *DAGSTER_SERVICES):
        assert "healthcheck" in services[name], name


def test_dagster_daemon_waits_for_its_dependencies(services):
    deps = depends_on(services["dagster-daemon"])
    assert deps["postgres"] == "service_healthy"
    assert deps["kafka"] == "service_healthy"
    assert deps["minio-init"] == "service_completed_successfully"
    assert depends_on(services["dagster-webserver"])["postgres"] == "service_healthy"


# --------------------------------------------------------------------------- dagster services


def test_dagster_services_build_from_repo_dockerfile(services):
    for name in DAGSTER_SERVICES:
        build = services[name]["build"]
        if isinstance(build, str):
            build = {"context": build}
        assert (REPO / build.get("context", ".")).resolve() == REPO, name
        assert (REPO / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
    assert DOCKERFILE.is_file()


def test_dagster_commands(services):
    web = run_text(services["dagster-webserver"])
    daemon = run_text(services["dagster-daemon"])
    assert web.split()[0] == "dagster-webserver"
    assert "-h 0.0.0.0" in web and "-p 3000" in web
    assert daemon.split()[:2] == ["dagster-daemon", "run"]
    for text in (web, daemon):
        if workspace := re.search(r"(?:-w|--workspace)\s+(\S+)", text):
            path = workspace.group(1)
            assert path.startswith(APP_DIR + "/"), text
            assert (REPO / path.removeprefix(APP_DIR + "/")).resolve() == WORKSPACE_YAML, text
        else:
            module = re.search(r"(?:-m|--module-name)\s+(\S+)", text)
            assert module and module.group(1) == "lakebed.assets.definitions", text


def test_workspace_loads_the_project_code_location():
    workspace = yaml.safe_load(WORKSPACE_YAML.read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    modules = []
    for entry in workspace["load_from"]:
        spec = entry["python_module"]
        modules.append(spec if isinstance(spec, str) else spec["module_name"])
    assert modules == [pyproject["tool"]["dagster"]["module_name"]] == ["lakebed.assets.definitions"]


def test_dagster_services_share_the_lakebed_environment(compose, services):
    anchor = {k: interpolate(str(v)) for k, v in compose["x-lakebed-env"].items()}
    for name in DAGSTER_SERVICES:
        assert service_env(services[name]) == anchor, name
    required = {
        "LAKEBED_HOME",
        "LAKEBED_KAFKA_BOOTSTRAP",
        "LAKEBED_COLD_ROOT",
        "LAKEBED_LANDING_DIR",
        "LAKEBED_LINEAGE_NAMESPACE",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ALLOW_HTTP",
        "OPENLINEAGE_URL",
        "OPENLINEAGE_NAMESPACE",
        "DAGSTER_POSTGRES_USER",
        "DAGSTER_POSTGRES_PASSWORD",
        "DAGSTER_POSTGRES_HOST",
        "DAGSTER_POSTGRES_DB",
    }
    assert required <= set(anchor), sorted(required - set(anchor))
    assert anchor["OPENLINEAGE_NAMESPACE"] == anchor["LAKEBED_LINEAGE_NAMESPACE"]


def test_secrets_in_the_environment_are_overridable(compose):
    raw = {k: str(v) for k, v in compose["x-lakebed-env"].items()}
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "DAGSTER_POSTGRES_USER",
        "DAGSTER_POSTGRES_PASSWORD",
    ):
        assert raw[key].startswith("${"), f"{key} should come from ${{...}} so a .env can set it"


def test_the_feature_server_needs_its_token(services):
    features = services["features"]
    assert features["command"][:3] == ["lakebed", "serve", "features"]
    token = str(features["environment"]["LAKEBED_FEATURE_SERVER_TOKEN"])
    assert token.startswith("${LAKEBED_FEATURE_SERVER_TOKEN:?"), (
        "no default token: compose must refuse to start without one"
    )
    assert "LAKEBED_FEATURE_SERVER_TOKEN" in " ".join(features["healthcheck"]["test"])


def test_lakebed_env_vars_are_config_fields(lakebed_env):
    from lakebed.config import LakebedConfig

    names = [name for name in lakebed_env if name.startswith("LAKEBED_")]
    assert names
    unknown = [n for n in names if n.removeprefix("LAKEBED_").lower() not in LakebedConfig.model_fields]
    assert not unknown, f"not fields of LakebedConfig: {unknown}"


def test_kafka_bootstrap_is_the_internal_listener(services, lakebed_env):
    kafka_env = service_env(services["kafka"])
    internal = _advertised(kafka_env)[kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert lakebed_env["LAKEBED_KAFKA_BOOTSTRAP"] == internal
    host, port = host_port(lakebed_env["LAKEBED_KAFKA_BOOTSTRAP"])
    assert host == "kafka" and host in services
    listen_ports = {int(item.rsplit(":", 1)[1]) for item in kafka_env["KAFKA_LISTENERS"].split(",")}
    assert port in listen_ports


def test_s3_endpoint_is_minio(services, lakebed_env):
    url = urlparse(lakebed_env["AWS_ENDPOINT_URL"])
    assert url.scheme == "http" and lakebed_env["AWS_ALLOW_HTTP"] == "true"
    assert url.hostname == "minio" and url.hostname in services
    assert url.port == 9000  # MinIO's S3 API (console is on 9001)
    assert urlparse(lakebed_env["LAKEBED_COLD_ROOT"]).scheme == "s3"


def test_openlineage_url_is_marquez(services, lakebed_env):
    url = urlparse(lakebed_env["OPENLINEAGE_URL"])
    assert url.hostname == "marquez" and url.hostname in services
    assert str(url.port) == service_env(services["marquez"])["MARQUEZ_PORT"]


def test_lakebed_data_volume_is_shared(compose, services, lakebed_env):
    assert "lakebed-data" in (compose.get("volumes") or {})
    home = lakebed_env["LAKEBED_HOME"]
    assert home == "/data/lakebed"
    assert lakebed_env["LAKEBED_LANDING_DIR"].startswith(home + "/")
    for name in DAGSTER_SERVICES:
        mounts = volume_mounts(services[name])
        assert mounts.get(home) == "lakebed-data", name
        # runs execute in the daemon, the webserver shows their logs: shared storage
        assert mounts.get(f"{DAGSTER_HOME}/storage"), name
    assert (
        volume_mounts(services["dagster-webserver"])[f"{DAGSTER_HOME}/storage"]
        == volume_mounts(services["dagster-daemon"])[f"{DAGSTER_HOME}/storage"]
    )


# --------------------------------------------------------------------------- deploy/dagster.yaml


def _walk(node: Any, path: tuple[str, ...] = ()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (str(key),), value
            yield from _walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (str(i),))


def test_dagster_yaml_uses_env_driven_postgres_storage(dagster_yaml, services):
    db = dagster_yaml["storage"]["postgres"]["postgres_db"]
    for field in ("username", "password", "hostname", "db_name"):
        assert isinstance(db[field], dict) and set(db[field]) == {"env"}, f"{field} must be {{env: ...}}"
        for name in DAGSTER_SERVICES:
            assert db[field]["env"] in service_env(services[name]), (field, name)
    # dagster-postgres installs psycopg2; SQLAlchemy >= 2.1 defaults postgresql:// to psycopg 3.
    assert db.get("scheme") == "postgresql+psycopg2"


def test_dagster_yaml_queue_and_launcher(dagster_yaml):
    assert dagster_yaml["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert dagster_yaml["run_launcher"]["class"] == "DefaultRunLauncher"
    for path, value in _walk(dagster_yaml):
        if path[-1] == "module":
            # `dagster.core.*` no longer exists in current Dagster releases
            assert not value.startswith("dagster.core"), path


def test_dagster_yaml_has_no_literal_secrets(dagster_yaml, lakebed_env):
    credential = re.compile(r"pass|secret|token|user|key", re.IGNORECASE)
    for path, value in _walk(dagster_yaml):
        if credential.search(path[-1]) and path[-1] != "env":
            assert isinstance(value, dict) and "env" in value, f"{'.'.join(path)} is hard-coded"
    text = DAGSTER_YAML.read_text()
    for key in ("DAGSTER_POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert lakebed_env[key] not in text, f"value of {key} appears in dagster.yaml"


def test_dagster_yaml_is_a_valid_instance_config(tmp_path):
    """Validated against Dagster's own instance schema (no database needed)."""
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_POSTGRES_HOST"}
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] > 0


# --------------------------------------------------------------------------- image


def test_dockerfile_builds_the_dagster_image():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "pip install" in text and "uv" in text
    assert re.search(r"uv pip install[^\n]*\"?\.\[postgres\]\"?", text), (
        "installs the project with the postgres extra"
    )
    assert re.search(r"^COPY pyproject\.toml uv\.lock \./$", text, re.MULTILINE)
    assert re.search(r"uv export --frozen[^\n]*--extra postgres", text), "installs the locked versions"
    assert re.search(rf"DAGSTER_HOME={re.escape(DAGSTER_HOME)}\b", text)
    assert re.search(rf"^WORKDIR {re.escape(APP_DIR)}$", text, re.MULTILINE)
    assert re.search(r"^COPY deploy/dagster\.yaml \S*dagster\.yaml$", text, re.MULTILINE)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("dagster-postgres") for req in extras["postgres"])


def test_dockerignore_keeps_local_state_out_of_the_image():
    lines = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in (".git", ".venv", ".lakebed", "bench/out", ".env"):
        assert pattern in lines, pattern
    assert any("__pycache__" in line for line in lines)
    for needed in ("pyproject.toml", "README.md", "deploy", "lakebed", "assets", "*", "**"):
        assert needed not in lines, f"{needed} is needed in the build context"


# --------------------------------------------------------------------------- metrics and dashboard


def _scrape_targets() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_scrapes_the_lakebed_services(compose, services):
    prometheus = services["prometheus"]
    assert volume_mounts(prometheus)["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    jobs = _scrape_targets()
    for job, service in (("lakebed-features", "features"), ("lakebed-tables", "metrics")):
        (target,) = jobs[job]["static_configs"][0]["targets"]
        host, port = host_port(target)
        assert host == service and host in services, job
        assert f"--port {port}" in run_text(services[service]) or str(port) in services[service]["command"]
    # The feature server needs its token: a compose secret from the environment, read from a file.
    auth = jobs["lakebed-features"]["authorization"]
    assert auth["type"] == "Bearer" and "credentials" not in auth
    secret = auth["credentials_file"].removeprefix("/run/secrets/")
    assert secret in prometheus["secrets"]
    assert compose["secrets"][secret] == {"environment": "LAKEBED_FEATURE_SERVER_TOKEN"}
    assert "--host 0.0.0.0" in run_text(services["metrics"])


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(services):
    grafana = services["grafana"]
    mounts = volume_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    dashboard_path = next(c for c, h in mounts.items() if h == "./deploy/grafana/lakebed.json")
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "lakebed.yaml").read_text())
    assert dashboard_path.startswith(provider["providers"][0]["options"]["path"] + "/")
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert urlparse(source["url"]).hostname == "prometheus" and source["type"] == "prometheus"
    dashboard = json.loads((GRAFANA / "lakebed.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    assert not str(service_env(grafana)["GF_SECURITY_ADMIN_PASSWORD"]).startswith("admin")
    assert str(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]).startswith("${")


def test_every_dashboard_query_names_metrics_lakebed_exports():
    from lakebed.metrics import exported_series

    families = exported_series()
    exported = {name for series in families.values() for name in series}
    dashboard = json.loads((GRAFANA / "lakebed.json").read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\blakebed_[a-z_]+", target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], sorted(names - exported))
            queried |= names
    # ... and every metric is on the dashboard.
    assert not [family for family, series in families.items() if not queried & set(series)]
