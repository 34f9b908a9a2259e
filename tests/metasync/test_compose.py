"""compose consistency: docker-compose.yml, the Dockerfile, .env.example and
docs/configuration.md agree with the code.

Docker does not run here, so the production description is checked statically:
every command a service runs exists, every variable compose passes or interpolates
is one the settings read (``metasync.env.REGISTRY``), every service has a restart
policy and a healthcheck, and the database/broker settings the pipeline relies on
are there. None of these tests touch the database.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "ops" / "prometheus"
EXPORTER_VENV_SCRIPT = ROOT / "scripts" / "exporter-venv"
EXPORTER_PINS = ROOT / "ops" / "celery-exporter" / "requirements.txt"

# Variables docker-compose.yml may interpolate that no metasync process reads.
COMPOSE_ONLY = {
    "METASYNC_VERSION",  # tag of the metasync image (`image: metasync:${METASYNC_VERSION:-latest}`)
}
# Processes of docs/architecture.md and the service that runs each (the canary mock never runs in production).
PROCESS_SERVICES = {"web", "ingest", "worker", "canary-worker", "beat", "cdc", "flower", "celery-exporter"}
# Services described but not yet added, with the command whose arrival makes them due.
PENDING_SERVICES = {"cdc": "cdc_consume"}
# Where Prometheus finds each process's metrics in compose: service -> how to read the port.
# (beat has no endpoint of its own: its work shows in the workers' metrics and celery-exporter.)
SCRAPED_SERVICES = ("web", "ingest", "cdc", "worker", "canary-worker", "flower", "celery-exporter")
ONE_SHOT = {"migrate"}
CELERY_SUBCOMMANDS = {"worker", "beat", "flower", "inspect"}
INTERPOLATION = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def registry() -> dict:
    settings.INSTALLED_APPS  # noqa: B018 - loading settings fills the registry
    from metasync.env import REGISTRY

    return REGISTRY


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def is_metasync(service: dict) -> bool:
    """Runs our image (built from this repository)."""
    return service.get("build") == "." or str(service.get("image", "")).startswith("metasync:")


def app_services(services: dict[str, dict]) -> dict[str, dict]:
    return {name: svc for name, svc in services.items() if is_metasync(svc)}


def argv(command: str | list[str]) -> list[str]:
    """A compose command as argv, with compose's `$$` escape undone."""
    parts = shlex.split(command) if isinstance(command, str) else [str(p) for p in command]
    return [p.replace("$$", "$") for p in parts]


def option(args: list[str], *names: str) -> str | None:
    """Value of `-Q x`, `--queues x` or `--queues=x` in args (first of names that is present)."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return argv(test)
    kind, *rest = test
    return argv(" ".join(rest)) if kind == "CMD-SHELL" else argv(rest)


def strings(node: object):
    """Every string key and value of a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def interpolated(text: str) -> set[str]:
    return {m["braced"] or m["bare"] for m in INTERPOLATION.finditer(text.replace("$$", ""))}


def environment_keys(service: dict) -> set[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0] for item in env}
    return set(env)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def env_files(service: dict) -> list[str]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, (str, dict)) else files
    return [f["path"] if isinstance(f, dict) else f for f in files]


def size_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]?)B?", text.strip().upper())
    assert match, f"cannot read size {text!r}"
    return int(match[1]) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match[2]]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --- (a) every command a service runs exists ------------------------------------------


def test_every_process_of_the_system_has_a_service(services):
    """docs/architecture.md: one service per process; a pending one becomes due once its command exists."""
    for name in sorted(PROCESS_SERVICES - set(PENDING_SERVICES)):
        assert name in services, f"docker-compose.yml: no service {name!r} (a process of docs/architecture.md)"
    for name, command in PENDING_SERVICES.items():
        if command in get_commands():
            assert name in services, (
                f"docker-compose.yml: `manage.py {command}` exists now, add the {name!r} service "
                f"and remove it from PENDING_SERVICES in {Path(__file__).name}"
            )


def test_manage_py_commands_exist(services):
    commands = get_commands()
    for name, svc in app_services(services).items():
        args = argv(svc.get("command") or [])
        if args[:2] == ["python", "manage.py"]:
            assert len(args) > 2, f"service {name!r}: `python manage.py` without a command"
            assert args[2] in commands, (
                f"service {name!r} runs `manage.py {args[2]}`, which is not a management command"
            )


def test_celery_commands_match_the_celery_configuration(services):
    queues = {q.name for q in settings.CELERY_TASK_QUEUES}
    node_names: dict[str, str] = {}
    for name, svc in app_services(services).items():
        args = argv(svc.get("command") or [])
        if not args or args[0] != "celery":
            continue
        assert option(args, "-A", "--app") == "metasync", f"service {name!r}: celery must run with `-A metasync`"
        app = importlib.import_module("metasync").celery_app
        assert app.main == "metasync", f"service {name!r}: metasync.celery_app is not the metasync Celery app"
        sub = next((a for a in args[1:] if a in CELERY_SUBCOMMANDS), None)
        assert sub, f"service {name!r}: celery sub-command must be one of {sorted(CELERY_SUBCOMMANDS)}: {args}"
        if sub == "worker":
            wanted = option(args, "-Q", "--queues")
            assert wanted, f"service {name!r}: a worker must name its queues with -Q"
            unknown = set(wanted.split(",")) - queues
            assert not unknown, (
                f"service {name!r}: -Q {wanted} names queues {sorted(unknown)} that are not in "
                f"settings.CELERY_TASK_QUEUES {sorted(queues)}"
            )
            node = option(args, "-n", "--hostname")
            assert node and "@" in node, f"service {name!r}: a worker needs a node name `-n prefix@%h`"
            prefix = node.split("@")[0]
            assert prefix not in node_names, (
                f"services {node_names.get(prefix)!r} and {name!r} use the same worker name {prefix}@"
            )
            node_names[prefix] = name
        if sub == "beat":
            scheduler = option(args, "-S", "--scheduler")
            assert scheduler == settings.CELERY_BEAT_SCHEDULER, (
                f"service {name!r}: beat scheduler {scheduler!r} != settings.CELERY_BEAT_SCHEDULER "
                f"{settings.CELERY_BEAT_SCHEDULER!r}"
            )
            module, _, attr = scheduler.partition(":")
            assert hasattr(importlib.import_module(module), attr), f"service {name!r}: {scheduler} not importable"


def test_worker_healthchecks_ping_their_own_worker(services):
    """`celery inspect ping -d prefix@$HOSTNAME` must name the node the service's worker runs as."""
    for name, svc in app_services(services).items():
        args = argv(svc.get("command") or [])
        if "worker" not in args[:4] or args[0] != "celery":
            continue
        prefix = option(args, "-n", "--hostname").split("@")[0]
        check = healthcheck_argv(svc)
        assert check[:4] == ["celery", "-A", "metasync", "inspect"] and "ping" in check, (
            f"service {name!r}: healthcheck should be `celery -A metasync inspect ping`, is {check}"
        )
        assert option(check, "-d", "--destination") == f"{prefix}@$HOSTNAME", (
            f"service {name!r}: healthcheck pings {option(check, '-d', '--destination')!r}, "
            f"the worker runs as {prefix}@%h"
        )


def test_process_alive_healthchecks_look_for_the_service_command(services):
    for name, svc in app_services(services).items():
        check = healthcheck_argv(svc) if "healthcheck" in svc else []
        if check[:2] == ["python", "-c"] and "psutil" in check[2]:
            assert len(check) == 4, f"service {name!r}: process-alive check needs the process to look for"
            command = " ".join(argv(svc["command"]))
            assert check[3] in command, (
                f"service {name!r}: healthcheck looks for {check[3]!r}, not part of its command {command!r}"
            )


def test_gunicorn_targets_are_importable(services):
    targets = []
    for name, svc in app_services(services).items():
        args = argv(svc.get("command") or [])
        if args and args[0] == "gunicorn":
            targets.append((f"service {name!r}", next(a for a in args[1:] if not a.startswith("-"))))
    cmd = [args for word, args in dockerfile_instructions() if word == "CMD"]
    assert cmd, "Dockerfile: no CMD"
    image_cmd = yaml.safe_load(cmd[-1])
    if image_cmd[0] == "gunicorn":
        targets.append(("Dockerfile CMD", image_cmd[1]))
    assert targets, "no gunicorn command found (web)"
    for where, target in targets:
        module, _, attr = target.partition(":")
        assert hasattr(importlib.import_module(module), attr or "application"), f"{where}: {target} not importable"


# --- (b) every variable compose passes is one the settings read -------------------------


def test_compose_passes_only_variables_the_settings_read(services):
    # a secret setting is also read from the file its <NAME>_FILE names (metasync/env.py)
    known = set(registry()) | {f"{name}_FILE" for name, var in registry().items() if var.secret}
    for name, svc in app_services(services).items():
        unknown = environment_keys(svc) - known
        assert not unknown, (
            f"service {name!r} environment: {sorted(unknown)} not read by metasync/settings.py (REGISTRY)"
        )


def test_compose_interpolates_only_known_variables(compose):
    known = set(registry()) | COMPOSE_ONLY
    used = set().union(*(interpolated(s) for s in strings(compose)))
    unknown = used - known
    assert not unknown, (
        f"docker-compose.yml interpolates {sorted(unknown)}: not read by metasync/settings.py (REGISTRY) "
        f"and not in COMPOSE_ONLY of {Path(__file__).name}; settings must read them (env.string(...)) "
        f"so .env.example and docs/configuration.md list them"
    )


def test_every_app_service_names_its_process(services):
    for name, svc in app_services(services).items():
        assert environment(svc).get("METASYNC_PROCESS") == name, (
            f"service {name!r}: environment must set METASYNC_PROCESS={name} (Postgres application_name)"
        )


# --- (c), (d) .env.example and docs/configuration.md list exactly the registry ---------


def test_env_example_lists_every_setting_once():
    names = [m[1] for m in re.finditer(r"(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)=", (ROOT / ".env.example").read_text())]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f".env.example: listed more than once: {duplicates}"
    known = set(registry())
    missing, extra = sorted(known - set(names)), sorted(set(names) - known)
    assert not missing, f".env.example: missing variables the settings read: {missing}"
    assert not extra, f".env.example: variables metasync/settings.py does not read (REGISTRY): {extra}"


def test_env_example_gives_no_secret_a_value():
    lines = (ROOT / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line))
    filled = sorted(n for n, var in registry().items() if (var.secret or var.required) and values.get(n, ""))
    assert not filled, f".env.example: secrets and required variables must be empty: {filled}"


def test_configuration_doc_describes_every_setting():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"(?m)^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|", doc))
    missing = sorted(set(registry()) - rows)
    assert not missing, f"docs/configuration.md: no table row for {missing}"
    for needed in ("_FILE", "metasync: configuration error:", "METASYNC_ENV_FILE"):
        assert needed in doc, f"docs/configuration.md: does not explain {needed!r}"


# --- (e) restart, healthchecks, env_file, dependencies ---------------------------------


def test_every_service_has_a_restart_policy_and_a_healthcheck(services):
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", f'one-shot service {name!r} must have restart: "no"'
            continue
        assert svc.get("restart") in ("unless-stopped", "always"), f"service {name!r}: restart policy missing"
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"service {name!r}: healthcheck missing"


def test_app_services_use_env_file_and_wait_for_their_dependencies(services):
    for name, svc in app_services(services).items():
        assert ".env" in env_files(svc), f"service {name!r}: env_file must include .env"
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"service {name!r}: depends_on needs conditions (long form)"
        for dep in ("postgres", "redis"):
            condition = (depends.get(dep) or {}).get("condition")
            assert condition == "service_healthy", (
                f"service {name!r}: depends_on {dep} must have condition service_healthy, has {condition!r}"
            )
        if name not in ONE_SHOT:
            for one_shot in ONE_SHOT:
                condition = (depends.get(one_shot) or {}).get("condition")
                assert condition == "service_completed_successfully", (
                    f"service {name!r}: depends_on {one_shot} must have condition "
                    f"service_completed_successfully, has {condition!r}"
                )


def test_dependencies_have_healthchecks(services):
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"service {name!r} depends on unknown service {dep!r}"
            if (spec or {}).get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"service {name!r} waits for {dep!r}, which has no healthcheck"


def test_third_party_images_are_pinned(services):
    for name, svc in services.items():
        if is_metasync(svc) or "build" in svc:  # built here from pinned requirements
            continue
        image = svc.get("image", "")
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), (
            f"service {name!r}: image {image!r} must be pinned to a version"
        )
    expected = {"emqx": "emqx/emqx:5.8.", "postgres": "postgres:16", "redis": "redis:7",
                "prometheus": "prom/prometheus:v"}
    for name, prefix in expected.items():
        assert services[name]["image"].startswith(prefix), f"service {name!r}: image must be {prefix}*"


# --- (f) database and broker settings the pipeline relies on ---------------------------


def test_postgres_is_configured_for_logical_replication(services):
    args = argv(services["postgres"]["command"])
    params = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    assert params.get("wal_level") == "logical", "postgres command: needs -c wal_level=logical (CDC publication)"
    assert params.get("max_slot_wal_keep_size"), (
        "postgres command: needs -c max_slot_wal_keep_size so a stalled slot cannot fill the disk"
    )
    assert int(params.get("max_replication_slots", "0")) >= 1, "postgres command: needs max_replication_slots"
    assert params.get("ssl") == "on", "postgres command: needs -c ssl=on (DATABASE_URL uses verify-full)"


def test_emqx_accepts_real_births(services):
    env = environment(services["emqx"])
    size = env.get("EMQX_MQTT__MAX_PACKET_SIZE")
    assert size, "emqx: EMQX_MQTT__MAX_PACKET_SIZE not set (EMQX's default of 1 MB drops real births)"
    assert size_bytes(size) >= 64 * 1024**2, f"emqx: EMQX_MQTT__MAX_PACKET_SIZE={size} is below 64 MB"


def test_redis_persists(services):
    args = argv(services["redis"]["command"])
    assert option(args, "--appendonly") == "yes", "redis command: needs --appendonly yes (queued tasks survive)"
    assert services["redis"].get("volumes"), "redis: needs a volume for its data"


# --- (g) the image -----------------------------------------------------------------------


def test_image_runs_as_non_root_under_tini():
    instructions = dockerfile_instructions()
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile: the last USER must not be root"
    entrypoints = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoints and "tini" in entrypoints[-1], "Dockerfile: ENTRYPOINT must be tini"


def test_image_bakes_in_no_configuration():
    """Build-time values for collectstatic are inline in one RUN, never ENV/ARG."""
    for word, args in dockerfile_instructions():
        if word in ("ENV", "ARG"):
            named = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args)) | {args.split("=")[0].split()[0]}
            baked = sorted(named & set(registry()))
            assert not baked, f"Dockerfile: {word} sets {baked}; configuration comes from the environment at run time"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for path in (".env", ".devstack", ".venv", ".venv-exporter", ".git"):
        assert path in ignored, f".dockerignore: {path} must be excluded from the build context"


# --- (h) monitoring: Flower, celery-exporter, worker metrics, Prometheus ------------------


def semver(tag: str) -> str:
    match = re.fullmatch(r"v?(\d+\.\d+\.\d+)", tag)
    assert match, f"{tag!r} is not a pinned X.Y.Z version"
    return match[1]


def test_flower_requires_basic_auth(services):
    """SEC-03: Flower shows task arguments; compose must refuse to start it without a login."""
    args = argv(services["flower"]["command"])
    auth = option(args, "--basic-auth", "--basic_auth")
    assert auth, "flower: command needs --basic-auth"
    match = re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth)
    assert match, (
        f"flower: --basic-auth must be `${{FLOWER_BASIC_AUTH:?message}}` (required, no default, no literal "
        f"password), is {auth!r}"
    )
    var = registry().get("FLOWER_BASIC_AUTH")
    assert var and var.secret, "FLOWER_BASIC_AUTH must be a secret setting (metasync/settings.py)"


def test_celery_exporter_is_the_dev_stacks_and_watches_the_broker(services):
    """Compose builds the exporter from the very pin file the dev stack's .venv-exporter installs."""
    svc = services["celery-exporter"]
    assert Path(ROOT, svc.get("build", "")).resolve() == EXPORTER_PINS.parent, (
        "celery-exporter: build it from ops/celery-exporter (the dev stack's pins), not a foreign image"
    )
    dockerfile = (EXPORTER_PINS.parent / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY requirements.txt" in dockerfile and "pip install -r /tmp/requirements.txt" in dockerfile
    pins = [line.strip() for line in EXPORTER_PINS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert all("==" in pin for pin in pins), f"{EXPORTER_PINS}: every line must pin an exact version"
    (exporter,) = [pin for pin in pins if pin.startswith("prometheus-exporter-celery==")]
    semver(exporter.partition("==")[2])
    script = EXPORTER_VENV_SCRIPT.read_text(encoding="utf-8")
    assert 'PINS_FILE = REPO / "ops" / "celery-exporter" / "requirements.txt"' in script, (
        "scripts/exporter-venv must install ops/celery-exporter/requirements.txt"
    )
    assert not re.search(r"prometheus-exporter-celery==\d", script), (
        "scripts/exporter-venv must not pin a version of its own"
    )
    args = argv(svc["command"])
    assert "REDIS_URL" in interpolated(option(args, "--broker-url") or ""), (
        "celery-exporter: --broker-url must be ${REDIS_URL...}, the broker the workers use"
    )


def test_workers_serve_their_metrics_on_a_port_of_their_own(services):
    ports: dict[str, str] = {}
    for name, svc in app_services(services).items():
        args = argv(svc.get("command") or [])
        if args[:1] != ["celery"] or "worker" not in args[:4]:
            continue
        port = environment(svc).get("WORKER_METRICS_PORT", "")
        assert port.isdigit() and int(port) > 0, (
            f"service {name!r}: set WORKER_METRICS_PORT (the worker's metrics endpoint, scraped by prometheus)"
        )
        assert port not in ports, f"services {ports[port]!r} and {name!r} both use WORKER_METRICS_PORT={port}"
        ports[port] = name


def prometheus_mount(svc: dict) -> tuple[Path, str]:
    """(host folder, container folder) of the read-only ops/prometheus mount."""
    for volume in svc.get("volumes") or []:
        parts = volume.split(":") if isinstance(volume, str) else [volume["source"], volume["target"]]
        if Path(ROOT, parts[0]).resolve() == PROMETHEUS_DIR:
            assert parts[2:] == ["ro"] or (isinstance(volume, dict) and volume.get("read_only")), (
                f"prometheus: mount {volume!r} read-only"
            )
            return PROMETHEUS_DIR, parts[1].rstrip("/")
    raise AssertionError("prometheus: mount ./ops/prometheus (the config and its rule files) read-only")


def test_prometheus_runs_the_repository_config_and_rules(services):
    svc = services["prometheus"]
    host, container = prometheus_mount(svc)
    config_path = option(argv(svc["command"]), "--config.file")
    assert config_path and config_path.startswith(container + "/"), (
        f"prometheus: --config.file must be inside the mounted {container}, is {config_path!r}"
    )
    config_file = host / config_path[len(container) + 1:]
    assert config_file.is_file(), f"prometheus: --config.file {config_path} is {config_file}, which does not exist"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    rule_files = config.get("rule_files") or []
    assert rule_files, f"{config_file.relative_to(ROOT)}: no rule_files"
    for rule in rule_files:
        target = config_file.parent / rule if not rule.startswith("/") else host / rule[len(container) + 1:]
        assert target.is_file(), f"{config_file.relative_to(ROOT)}: rule file {rule!r} is not in {host}"
    assert any(Path(r).name == "alerts.yml" for r in rule_files), "prometheus: alerts.yml is not a rule file"
    # a password_file under /run/secrets/ must be a secret the service gets
    secrets = {s if isinstance(s, str) else s.get("target") or s["source"] for s in svc.get("secrets") or []}
    for job in config.get("scrape_configs") or []:
        password_file = (job.get("basic_auth") or {}).get("password_file", "")
        if password_file.startswith("/run/secrets/"):
            assert password_file.rsplit("/", 1)[1] in secrets, (
                f"prometheus: job {job['job_name']!r} reads {password_file}, which is not one of its secrets"
            )
    volumes = [v for v in svc.get("volumes") or [] if isinstance(v, str) and ":/prometheus" in v]
    assert volumes, "prometheus: keep its data (/prometheus) in a volume"


def test_prometheus_scrapes_every_process(services):
    """Every process with a metrics endpoint is a scrape target at its service name and port."""
    host, container = prometheus_mount(services["prometheus"])
    config_file = host / option(argv(services["prometheus"]["command"]), "--config.file")[len(container) + 1:]
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config_path = config_file.relative_to(ROOT)
    scraped: dict[str, set[int]] = {}
    for job in config.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                name, _, port = target.rpartition(":")
                scraped.setdefault(name, set()).add(int(port))
        for dns in job.get("dns_sd_configs") or []:
            for name in dns.get("names") or []:
                scraped.setdefault(name, set()).add(int(dns["port"]))

    def flag_port(name: str, default: int) -> int:
        args = argv(services[name]["command"])
        return int(option(args, "--port", "--metrics-port") or default)

    expected = {
        "web": 8000,  # gunicorn --bind 0.0.0.0:8000
        "ingest": flag_port("ingest", settings.INGEST_METRICS_PORT),
        "cdc": flag_port("cdc", settings.CDC_METRICS_PORT),
        "worker": int(environment(services["worker"]).get("WORKER_METRICS_PORT") or 0),
        "canary-worker": int(environment(services["canary-worker"]).get("WORKER_METRICS_PORT") or 0),
        "flower": flag_port("flower", 5555),
        "celery-exporter": flag_port("celery-exporter", 9808),
    }
    assert set(expected) == set(SCRAPED_SERVICES)
    for name, port in expected.items():
        assert port in scraped.get(name, set()), (
            f"{config_path}: service {name!r} is not scraped at {name}:{port} (scraped: {scraped.get(name)})"
        )
    unknown = sorted(n for n in scraped if n not in services and n not in ("localhost", "127.0.0.1"))
    assert not unknown, f"{config_path}: scrape targets {unknown} are not compose services"
