"""TC-44: bulk correction and export/import journeys in a real headless browser (tests/browser/conftest.py),
each ending with the Canary mock holding the result (docs/steward-bulk.md)."""

from __future__ import annotations

import csv
import io

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PLANT_METRICS = 120  # more than one page of the list (100), so "select all" must reach past it


def seed(plant: str, count: int) -> list:
    """``count`` metrics of one device in ``plant`` with engUnit °C, and one metric elsewhere."""
    from builders import device
    from catalog.models import Metric, MetricProperty

    dev = device(name=f"Dev{plant}")
    Metric.objects.bulk_create(Metric(device=dev, name=f"Area/T{i:03d}", uns_path=f"{dev.uns_path}/Area/T{i:03d}",
                                      datatype=10, plant=plant, fingerprint=b"") for i in range(count))
    metrics = list(Metric.objects.filter(device=dev).order_by("uns_path"))
    MetricProperty.objects.bulk_create(MetricProperty(metric=m, key="engUnit", sparkplug_type=12, type="string",
                                                      string_value="°C") for m in metrics)
    return metrics


def all_hold(stack, metrics: list, key: str, value: object) -> bool:  # type: ignore[no-untyped-def]
    return all(stack.canary.properties(m.canary_id).get(key) == value for m in metrics)


def test_bulk_correction_of_every_metric_of_a_filter_reaches_canary(steward_page, delivery_stack, screenshot):
    """TC-44: filter the list by plant, "select all" (past the first page), set engUnit; a bad value is a
    form error; the confirmation shows the count; every metric of the plant, and no other, ends in Canary."""
    metrics = seed("PA", PLANT_METRICS)
    other = seed("PB", 1)
    delivery_stack.wait_for(lambda: all_hold(delivery_stack, metrics + other, "engUnit", "°C"), 90,
                            "the seeded metrics to reach the Canary mock")
    page = steward_page
    page.goto(f"{page.base_url}/admin/catalog/metric/?plant=PA")
    page.check("#action-toggle")
    page.click("div.actions .question a")  # "Select all 120 metrics"
    page.select_option("select[name=action]", "bulk_override")
    page.click("button[name=index]")
    page.wait_for_url("**/catalog/metric/bulk/**")
    assert f"{PLANT_METRICS}" in page.inner_text("#bulk-count")
    page.fill("#id_key", "engUnit")
    page.select_option("#id_type", "double")
    page.fill("#id_value", "NaN")
    page.fill("#id_why", "units sheet from the plant")
    page.click("#bulk-form input[type=submit]")
    assert "finite number" in page.inner_text("#bulk-form .errorlist")
    page.select_option("#id_type", "string")
    page.fill("#id_value", "bar")
    page.click("#bulk-form input[type=submit]")
    assert f"on {PLANT_METRICS} metrics" in page.inner_text("#bulk-confirm")
    screenshot(page, "bulk-confirm")
    page.click("input[name=_confirm]")
    page.wait_for_url("**/catalog/metric/?plant=PA")
    assert "Bulk change" in page.inner_text("ul.messagelist")
    delivery_stack.wait_for(lambda: all_hold(delivery_stack, metrics, "engUnit", "bar"), 90,
                            "every metric of the plant to hold the bulk value in the Canary mock")
    assert delivery_stack.canary.properties(other[0].canary_id)["engUnit"] == "°C"


def test_export_edit_import_with_dry_run_reaches_canary(steward_page, delivery_stack, tmp_path, screenshot):
    """TC-44: export a filter as CSV, edit it, import: a sheet with a bad row shows the row's error and no
    import button; the corrected sheet shows its diff, is applied, and Canary holds the new values."""
    metrics = seed("PC", 3)
    delivery_stack.wait_for(lambda: all_hold(delivery_stack, metrics, "engUnit", "°C"), 90,
                            "the seeded metrics to reach the Canary mock")
    page = steward_page
    page.goto(f"{page.base_url}/admin/catalog/metric/?plant=PC")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "export_csv")
    with page.expect_download() as download:
        page.click("button[name=index]")
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert [(r["uns_path"], r["effective_value"]) for r in rows] == [(m.uns_path, "°C") for m in metrics]
    for r in rows:
        r["override_type"], r["override_value"] = "string", "K"

    def upload(sheet_rows: list[dict], name: str) -> None:
        path = tmp_path / name
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(sheet_rows[0]))
            writer.writeheader()
            writer.writerows(sheet_rows)
        page.goto(f"{page.base_url}/admin/catalog/metric/")
        page.click("a.import-link")
        page.set_input_files("#id_sheet", str(path))
        page.fill("#id_why", "corrected sheet")
        page.click("#import-form input[type=submit]")

    upload([*rows, {**rows[0], "uns_path": "No/Such/Metric"}], "bad.csv")
    assert "No metric 'No/Such/Metric'" in page.inner_text("#import-errors")
    assert page.locator("#import-confirm").count() == 0
    upload(rows, "good.csv")
    assert "3 added" in page.inner_text("#import-counts")
    screenshot(page, "import-dry-run")
    page.click("input[name=_confirm]")
    page.wait_for_url("**/catalog/metric/")
    assert "Import" in page.inner_text("ul.messagelist")
    delivery_stack.wait_for(lambda: all_hold(delivery_stack, metrics, "engUnit", "K"), 90,
                            "the imported overrides to reach the Canary mock")
