"""TC-44: the steward's journeys in a real headless browser (tests/browser/conftest.py)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_steward_logs_in_and_browses_metrics(steward_page, screenshot):
    """TC-44: a steward logs in and opens the metric list in the browser, without a server error."""
    page = steward_page
    page.goto(f"{page.base_url}/admin/catalog/metric/")
    assert page.locator("#changelist").is_visible()
    screenshot(page, "metric-list")


def test_delivery_stack_carries_catalog_rows_to_the_canary_mock(delivery_stack):
    """TC-44: the journeys' delivery fixture (CDC, flush, push, Canary mock) carries a catalog row to Canary."""
    from builders import device, metric
    from catalog.models import MetricProperty

    m = metric(device("Bstack"), "Line/Motor/Speed")
    MetricProperty.objects.create(metric=m, key="engUnit", sparkplug_type=12, type="string", string_value="rpm")
    delivery_stack.wait_for(lambda: delivery_stack.canary.properties(m.canary_id).get("engUnit") == "rpm", 60,
                            "the property to reach the Canary mock")
