"""OBS-03: the alert rules load and fire in ``promtool test rules`` for ingest silence, decode
failures, Canary failures, circuit open, CDC lag / retained WAL and backlog age (and workers down).

promtool is required, never skipped: ``make test`` installs it (``make tools``: Debian's
``prometheus`` package when run as root). The unit tests themselves are in
``ops/prometheus/alerts_test.yml``; the checks here keep the rule file, its tests, the scrape
configs, the runbook and the metrics the code exports in step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
OPS = BASE_DIR / "ops" / "prometheus"
RULES = OPS / "alerts.yml"
RULE_TESTS = OPS / "alerts_test.yml"
CONFIGS = (OPS / "prometheus.yml", OPS / "prometheus.local.yml")
RUNBOOK = BASE_DIR / "docs" / "runbook.md"
METRICS_DOC = BASE_DIR / "docs" / "metrics.md"

# Every process of the deployment and the port it serves /metrics on (docs/metrics.md).
JOBS = {"web": 8000, "ingest": 9101, "cdc": 9102, "worker": 9103, "canary-worker": 9104,
        "flower": 5555, "celery-exporter": 9808}
# Metrics an alert uses before the code exporting them is merged: name -> what will export it.
# Each must be documented in docs/metrics.md; remove the entry once the code registers the metric.
NOT_YET_EXPORTED: dict[str, str] = {}
# What OBS-03 names, as alert names.
REQUIRED = {
    "ingest silence": {"MetasyncIngestSilent", "MetasyncIngestDown"},
    "decode failures": {"MetasyncBirthDecodeFailures"},
    "Canary failures": {"MetasyncCanaryFailureRatio", "MetasyncCanaryBatchesFailing"},
    "circuit open": {"MetasyncCanaryCircuitOpen"},
    "CDC lag / retained WAL": {"MetasyncCdcLagHigh", "MetasyncCdcRetainedWalHigh", "MetasyncCdcSlotNotConsumed",
                               "MetasyncCdcSlotMissing"},
    "backlog age": {"MetasyncPendingBacklogOld"},
    "workers down": {"MetasyncProcessDown", "MetasyncQueueWithoutWorker"},
}


def promtool(*args: str, cwd: Path = OPS) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed. `make test` installs it (its `tools` step runs "
                    "`apt-get install prometheus` as root); otherwise install Debian's `prometheus` package "
                    "or the promtool binary from https://prometheus.io/download/.", pytrace=False)
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def rule_expressions() -> dict[str, str]:
    """Every rule's expression (alerts and recording rules), by rule name."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


# A metasync_ metric name, then its label matchers if any. Simple on purpose: the rules write
# selectors as `name{matchers}` (no `{__name__=...}` form, no braces inside label values).
METASYNC_SELECTOR = re.compile(r"\b(metasync_[a-z0-9_]+)\b(\s*\{[^}]*\})?")
JOB_MATCHER = re.compile(r'\bjob\s*=~?\s*"([^"]*)"')


def metasync_selectors_without_job(expr: str) -> list[str]:
    """The metasync_ selectors of ``expr`` that have no `job="…"` or `job=~"…"` matcher."""
    return [m.group(0).strip() for m in METASYNC_SELECTOR.finditer(expr)
            if not (m.group(2) and JOB_MATCHER.search(m.group(2)))]


def selected_jobs(expr: str) -> set[str]:
    """The job names the `job` matchers of ``expr``'s metasync_ selectors name (`a|b` split)."""
    return {job for m in METASYNC_SELECTOR.finditer(expr) if m.group(2)
            for matcher in JOB_MATCHER.findall(m.group(2)) for job in matcher.split("|")}


def test_alert_rules_load():
    """OBS-03: `promtool check rules` accepts the rule file."""
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_alert_rules_fire_in_promtool_unit_tests():
    """OBS-03: `promtool test rules` passes: every alert fires on its bad series and stays quiet otherwise."""
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_prometheus_config_is_valid_and_loads_the_rules(config: Path, tmp_path: Path):
    # promtool opens credential files: compose's secrets (/run/secrets/...) become files of a copy
    copy = tmp_path / "prometheus"
    shutil.copytree(OPS, copy)
    text = config.read_text()
    for secret in set(re.findall(r"/run/secrets/([\w.-]+)", text)):
        (tmp_path / secret).write_text("not-a-secret\n")
    (copy / config.name).write_text(text.replace("/run/secrets/", f"{tmp_path}/"))
    result = promtool("check", "config", config.name, cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_obs03_conditions_all_have_alerts():
    defined = set(alerts())
    missing = {what: names - defined for what, names in REQUIRED.items() if names - defined}
    assert not missing


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases = [case for group in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in group["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert set(alerts()) - fires == set(), "alerts without a test where they fire"
    assert set(alerts()) - quiet == set(), "alerts without a test where they stay quiet"


def test_every_alert_waits_is_graded_and_says_what_to_do():
    for name, rule in alerts().items():
        assert name.startswith("Metasync"), name
        assert rule.get("for"), f"{name}: no `for:` (one bad scrape would page)"
        assert rule["labels"].get("severity") in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations.get("summary") and len(annotations.get("description", "")) > 80, name
        assert annotations.get("runbook_url") == f"docs/runbook.md#{name.lower()}", name


def test_runbook_explains_every_alert():
    """Each alert's runbook_url points at a `### <AlertName>` heading of docs/runbook.md."""
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    missing = sorted(name for name in alerts() if name.lower() not in headings)
    assert not missing, f"docs/runbook.md has no section for: {', '.join(missing)}"


def test_alerts_use_metrics_the_code_exports():
    """A renamed metric would silently disable its alert: every metasync_* series must be defined."""
    used = set(re.findall(r"\bmetasync_[a-z0-9_]+", RULES.read_text()))
    sources = "\n".join(p.read_text() for app in ("ingest", "catalog", "cdcsync", "canary", "monitoring", "metasync")
                        for p in (BASE_DIR / app).rglob("*.py") if "migrations" not in p.parts)
    declared = set(re.findall(r"[\"'](metasync_[a-z0-9_]+)[\"']", sources))
    exported = declared | {f"{name}_total" for name in declared}  # prometheus_client adds _total to counters
    assert used - exported - set(NOT_YET_EXPORTED) == set()
    documented = METRICS_DOC.read_text()
    assert [name for name in NOT_YET_EXPORTED if f"`{name}`" not in documented] == []


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_prometheus_scrapes_every_process(config: Path):
    doc = yaml.safe_load(config.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(JOBS) <= set(jobs)
    for name, port in JOBS.items():
        job = jobs[name]
        targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        targets += [f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        assert targets and all(t.endswith(f":{port}") for t in targets), (name, targets)
        if config.name == "prometheus.yml":
            assert all(t == f"{name}:{port}" for t in targets), "compose: service names as hosts"
        else:
            assert all(t.startswith("127.0.0.1:") for t in targets)
    if config.name == "prometheus.yml":
        # docs/security.md: Prometheus holds no Flower login (Flower's /metrics is open; its login
        # could apply tasks); web's /metrics takes the monitoring token, from a file
        assert "basic_auth" not in jobs["flower"]
        assert jobs["web"]["authorization"]["credentials_file"] == "/run/secrets/monitoring_token"
    else:
        assert jobs["flower"]["basic_auth"]["password_file"], "the demo's Flower login, from a file"
        assert "password" not in jobs["flower"]["basic_auth"], "no secret in the config file"


@pytest.mark.parametrize(("expr", "missing"), [
    ('metasync_ingest_connected{job="ingest"} == 0', []),
    ('max(metasync_canary_circuit_state{ job=~"canary-worker" }) >= 1', []),
    ("metasync_cdc_slot_present == 0", ["metasync_cdc_slot_present"]),
    ('max(metasync_canary_circuit_state{outcome="x"}) >= 1', ['metasync_canary_circuit_state{outcome="x"}']),
    ('metasync_x{job!="web"} > 0', ['metasync_x{job!="web"}']),
    ('metasync_lag{job="cdc"} >= metasync_lag offset 1h', ["metasync_lag"]),
    ('increase(metasync_births_total{status="failed", job="worker"}[15m]) > 0', []),
    ('up{job="ingest"} == 0', []),
])
def test_job_selector_check_finds_selectors_without_job(expr: str, missing: list[str]):
    """The parser of the next test: what it accepts and what it reports."""
    assert metasync_selectors_without_job(expr) == missing


def test_every_metasync_selector_names_its_job():
    """A metric is exported by every process that imports its module (a gauge at its import-time
    value): without a `job` matcher a rule fires, or stays quiet, for a job it does not watch."""
    expressions = rule_expressions()
    without_job = {name: found for name, expr in expressions.items() if (found := metasync_selectors_without_job(expr))}
    assert not without_job, f"add the job that exports the metric (docs/metrics.md) to: {without_job}"
    unknown = {name: jobs for name, expr in expressions.items() if (jobs := selected_jobs(expr) - set(JOBS))}
    assert not unknown, f"jobs nobody scrapes (prometheus.yml): {unknown}"
