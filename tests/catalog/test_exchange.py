"""Export and import of overrides (docs/steward-bulk.md): sheets, dry run, atomic apply, audit and
Canary receiving the import (TC-44)."""

from __future__ import annotations

import csv
import io
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse
from openpyxl import load_workbook

from builders import device, metric
from canary import push, sync
from canary.client import CanaryClient
from catalog import exchange
from catalog.bulk import BadValue
from catalog.models import BulkChange, Metric, MetricProperty, MetricVersion, PropertyOverride, StagedImport

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows():
    """Plant A: two metrics with engUnit (°C) and max (100.0); the first has an engUnit override "bar"."""
    a = device(name="A")
    ms = [metric(a, f"Area/T{i}") for i in range(2)]
    Metric.objects.filter(device=a).update(plant="A")
    for m in ms:
        MetricProperty.objects.create(metric=m, key="engUnit", sparkplug_type=12, type="string", string_value="°C")
        MetricProperty.objects.create(metric=m, key="max", sparkplug_type=10, type="double", double_value=100.0)
    PropertyOverride.objects.create(metric=ms[0], key="engUnit", type="string", string_value="bar", updated_by="x")
    return ms



def export(client, action: str) -> bytes:
    response = client.post(f"{reverse('admin:catalog_metric_changelist')}?plant=A",
                           {"action": action, "select_across": "1", "_selected_action": ["1"], "index": 0})
    assert response.status_code == 200
    return b"".join(response.streaming_content) if response.streaming else response.content


def sheet(lines: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["uns_path", "key", "override_type", "override_value"])
    writer.writerows(lines)
    return out.getvalue().encode()


def test_export_csv_and_xlsx_hold_edge_override_and_effective_values(client, steward, rows):
    """TC-44: every (metric, key) of the filter, with the edge value, the override and the effective value."""
    m0, m1 = rows
    text = export(client, "export_csv").decode()
    got = list(csv.DictReader(io.StringIO(text)))
    assert [(r["uns_path"], r["key"]) for r in got] == [(m0.uns_path, "engUnit"), (m0.uns_path, "max"),
                                                         (m1.uns_path, "engUnit"), (m1.uns_path, "max")]
    assert got[0] == {"uns_path": m0.uns_path, "canary_id": m0.canary_id,
                           "key": "engUnit", "edge_type": "string", "edge_value": "°C", "override_type": "string",
                           "override_value": "bar", "effective_value": "bar"}
    assert (got[1]["edge_type"], got[1]["edge_value"], got[1]["override_type"], got[1]["effective_value"]) == (
        "double", "100", "", "100")
    book = load_workbook(io.BytesIO(export(client, "export_xlsx")), read_only=True)
    xlsx = [[c or "" for c in row] for row in book.worksheets[0].iter_rows(values_only=True)]
    assert xlsx[0] == list(exchange.COLUMNS)
    assert [dict(zip(xlsx[0], r, strict=True)) for r in xlsx[1:]] == got


def test_too_large_xlsx_export_is_refused_with_a_message(client, steward, rows, monkeypatch):
    """TC-44: an XLSX of more metrics than it can hold in memory is refused, the list shown again."""
    from catalog import admin_bulk

    monkeypatch.setattr(admin_bulk, "XLSX_MAX_METRICS", 1)
    response = client.post(f"{reverse('admin:catalog_metric_changelist')}?plant=A",
                           {"action": "export_xlsx", "select_across": "1", "_selected_action": ["1"], "index": 0})
    assert response.status_code == 302
    assert "at most 1 metrics" in " ".join(str(m) for m in client.get(response["Location"]).context["messages"])


def test_dry_run_reports_each_bad_row_and_writes_nothing(rows):
    """TC-44: unknown metric, bad value, value without type, repeated row, blank key: errors per row."""
    m0, m1 = rows
    plan = exchange.plan_import(exchange.read_sheet("s.csv", sheet([
        [m0.uns_path, "engUnit", "string", "K"],
        ["No/Such/Metric", "engUnit", "string", "K"],
        [m1.uns_path, "max", "double", "NaN"],
        [m1.uns_path, "max", "", "5"],
        [m0.uns_path, "engUnit", "string", "again"],
        [m1.uns_path, "", "string", "x"],
        [m1.uns_path, "max", "int", "99999999999"],
    ])))
    assert [(r.line, r.status) for r in plan.rows] == [(2, "change"), (3, "error"), (4, "error"), (5, "error"),
                                                        (6, "error"), (7, "error"), (8, "error")]
    assert all(r.error for r in plan.errors)
    with pytest.raises(BadValue):
        exchange.apply_import(exchange.read_sheet("s.csv", sheet([[m0.uns_path, "engUnit", "string", "K"],
                                                                  ["No/Such", "k", "string", "v"]])),
                              user="ana", why="x")
    assert PropertyOverride.objects.get().value == "bar" and not BulkChange.objects.exists()


@pytest.mark.parametrize("data", [b"\xff\xfe", b"a,b\n1,2\n", b"PK\x03\x04 not a zip"])
def test_unreadable_sheets_are_refused_with_a_message(data):
    """TC-44: a sheet that is not UTF-8 CSV / XLSX with the right columns is a BadValue, not a 500."""
    with pytest.raises(BadValue):
        exchange.read_sheet("s.xlsx" if data.startswith(b"PK") else "s.csv", data)


def test_import_journey_preview_then_apply_atomically_with_audit(client, steward, rows):
    """TC-44: upload -> dry run with the per-row diff -> confirm: one audited import, one version per metric,
    the metrics pending for Canary; a sheet with errors offers no import."""
    m0, m1 = rows
    url = reverse("admin:catalog_metric_import")
    assert client.get(url).status_code == 200
    bad = client.post(url, {"why": "x", "sheet": SimpleUploadedFile("s.csv", sheet([["No/Such", "k", "string", "v"]]))})
    assert bad.context["counts"]["error"] == 1 and b"import-confirm" not in bad.content
    good = sheet([[m0.uns_path, "engUnit", "", ""], [m0.uns_path, "max", "double", "250.5"],
                  [m1.uns_path, "engUnit", "string", "°C"], [m1.uns_path, "max", "", ""]])
    preview = client.post(url, {"why": "sheet from ana", "sheet": SimpleUploadedFile("s.csv", good)})
    assert preview.status_code == 200
    assert [(r.status, r.old, r.new) for r in preview.context["plan"].rows] == [
        ("clear", "bar", ""), ("add", "", "250.5"), ("add", "", "°C"), ("unchanged", "", "")]
    assert PropertyOverride.objects.get().value == "bar"  # a dry run writes nothing
    staged = StagedImport.objects.get()
    done = client.post(url, {"staged": staged.pk, "why": "sheet from ana", "_confirm": "1"})
    assert done.status_code == 302
    assert sorted((o.metric_id, o.key, o.value) for o in PropertyOverride.objects.all()) == [
        (m0.pk, "max", 250.5), (m1.pk, "engUnit", "°C")]
    change = BulkChange.objects.get()
    assert (change.action, change.metrics, change.why, change.changed_by) == ("import", 2, "sheet from ana",
                                                                              "steward:ana")
    v0 = MetricVersion.objects.get(metric=m0)
    assert v0.change == {"bulk": change.pk, "override_removed": {"engUnit": "bar"},
                         "override_added": {"max": 250.5}}
    with connection.cursor() as cur:
        cur.execute("SELECT metric_id FROM uns_meta.sync_pending ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == [m0.pk, m1.pk]
    assert not StagedImport.objects.exists()


def test_import_is_all_or_nothing_when_a_late_step_fails(rows, monkeypatch):
    """TC-44: a failure after the overrides were written rolls back overrides, versions and the audit row."""
    def fail(**kwargs):
        raise RuntimeError("signal receiver failed")

    monkeypatch.setattr(exchange.metrics_need_sync, "send", fail)
    with pytest.raises(RuntimeError):
        exchange.apply_import(exchange.read_sheet("s.csv", sheet([[rows[1].uns_path, "max", "double", "1"]])),
                              user="ana", why="x")
    assert PropertyOverride.objects.count() == 1 and not MetricVersion.objects.exists()
    assert not BulkChange.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_imported_overrides_reach_canary(canary, rows):
    """TC-44: an import goes through the normal flush and push; the mock holds the imported values."""
    m0, m1 = rows
    exchange.apply_import(exchange.read_sheet("s.csv", sheet([[m0.uns_path, "max", "double", "7.5"],
                                                              [m1.uns_path, "engUnit", "string", "K"]])),
                          user="ana", why="x")
    batches: list[int] = []
    client = CanaryClient()
    deadline = time.monotonic() + 15
    while True:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM uns_meta.sync_pending")
            if not cur.fetchone()[0]:
                break
        sync.flush_due(batches.extend)
        while batches:
            push.push_batches([batches.pop(0)], batches.extend, client)
        assert time.monotonic() < deadline, "still pending"
    assert canary.properties(m0.canary_id) == {"engUnit": "bar", "max": 7.5}
    assert canary.properties(m1.canary_id) == {"engUnit": "K", "max": 100.0}


def test_xlsx_cells_typed_in_excel_read_as_their_text():
    """TC-44: numbers, booleans and dates typed into a spreadsheet are read as the text a CSV would hold."""
    from datetime import datetime

    from openpyxl import Workbook

    book = Workbook()
    sheet_ = book.active
    sheet_.append(["uns_path", "key", "override_type", "override_value"])
    sheet_.append(["A/b", "max", "double", 250.5])
    sheet_.append(["A/b", "n", "int", 5])
    sheet_.append(["A/b", "on", "boolean", True])
    sheet_.append(["A/b", "at", "datetime", datetime(2026, 1, 31, 8, 0)])
    sheet_.append(["A/b", "none", None, None])
    out = io.BytesIO()
    book.save(out)
    rows = exchange.read_sheet("s.xlsx", out.getvalue())
    assert [r["override_value"] for r in rows] == ["250.5", "5", "true", "2026-01-31T08:00:00", ""]
    assert rows[4]["override_type"] == ""
