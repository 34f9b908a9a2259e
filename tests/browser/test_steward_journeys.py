"""TC-44: the steward's journeys in a real headless browser (tests/browser/conftest.py).

Each journey tries the bad inputs a steward may type (the fixture fails the test on any 5xx) and
ends by checking that the Canary mock holds the result.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from builders import device, metric
from catalog.models import MetricProperty, PropertyOverride
from sparkplug.datatypes import DataType as T

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DELIVERY_TIMEOUT = 60.0  # seconds: debounce 1 s, flush every few seconds, one push


def kiln_metric():
    m = metric(device("Bsecil", "Portugal", "Kiln"), "Maceira/Kiln/Temperature", datatype=T.Double)
    for key, sptype, kind, value in [("engUnit", T.String, "string", {"string_value": "°C"}),
                                     ("Hi", T.Double, "double", {"double_value": 1450.0}),
                                     ("Lo", T.Int8, "int", {"int_value": -10}),
                                     ("Count", T.UInt64, "long", {"long_value": Decimal(7)})]:
        MetricProperty.objects.create(metric=m, key=key, sparkplug_type=sptype, type=kind, **value)
    return m


def in_canary(stack, m, key, value, what):
    stack.wait_for(lambda: stack.canary.properties(m.canary_id).get(key) == value, DELIVERY_TIMEOUT, what)


def errors(page) -> str:
    return " ".join(page.locator(".errorlist").all_inner_texts())


def test_steward_corrects_a_double_property_and_canary_receives_it(steward_page, delivery_stack, screenshot):
    """TC-44: override editor journey — pick a key the edge sends (type from the edge), type bad values
    (form errors, no 5xx), then 250.5 (the value that once raised a 500): edge, override and effective
    value side by side, and the Canary mock holds 250.5."""
    page, stack = steward_page, delivery_stack
    m = kiln_metric()
    in_canary(stack, m, "Hi", 1450.0, "the edge value in Canary")
    page.goto(f"{page.base_url}/admin/catalog/metric/{m.pk}/change/")
    page.locator("#overrides-group .add-row a").click()
    row = "overrides-0"
    attempts = [
        ({"key": "Hi", "value": "abc"}, "not a number"),
        ({"key": "Hi", "value": "nan"}, "finite"),
        ({"key": "Hi", "value": "1e999"}, "finite"),
        ({"key": "Hi", "value": ""}, "not a number"),
        ({"key": "hi", "value": "250.5"}, "case-sensitive"),
        ({"key": "Typo", "value": "250.5"}, "name a type for a new key"),
        ({"key": "Hi", "value": "x", "value_type": "string"}, "keeps the edge"),
        ({"key": "Lo", "value": "300"}, "outside the range of Int8"),
        ({"key": "Count", "value": "-1"}, "outside the range of UInt64"),
        ({"key": "k" * 300, "value": "1", "value_type": "double"}, "bytes long"),
        ({"key": "engUnit", "value": "x" * 70_000}, "bytes long"),
    ]
    for fields, message in attempts:
        page.fill(f"#id_{row}-key", fields["key"])
        page.select_option(f"#id_{row}-value_type", fields.get("value_type", ""))
        page.fill(f"#id_{row}-value", fields["value"])
        page.click("input[name=_continue]")
        page.wait_for_load_state()
        assert message in errors(page), (fields["key"][:20], errors(page)[:500])
        if message == "outside the range of Int8":
            screenshot(page, "override-error")
    assert not PropertyOverride.objects.filter(metric=m).exists()
    page.fill(f"#id_{row}-key", "Hi")
    page.select_option(f"#id_{row}-value_type", "")
    page.fill(f"#id_{row}-value", "250.5")
    page.fill(f"#id_{row}-note", "sensor range corrected")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    assert errors(page) == ""
    assert page.locator(".messagelist .success").count() == 1
    properties = page.locator("#properties-group").inner_text()
    assert "1450.0" in properties and "250.5" in properties  # edge value beside override and effective value
    screenshot(page, "override-saved")
    override = PropertyOverride.objects.get(metric=m, key="Hi")
    assert (override.value, override.updated_by, override.note) == (250.5, "ana", "sensor range corrected")
    in_canary(stack, m, "Hi", 250.5, "the override in Canary")
    page.goto(f"{page.base_url}/admin/catalog/metricversion/?kind__exact=steward")
    history = page.locator("#result_list").inner_text()
    assert "Hi (override): (none) → 250.5" in history and "steward:ana" in history  # history that reads
    screenshot(page, "history")


def test_steward_adds_a_new_key_with_a_type(steward_page, delivery_stack):
    """TC-44: a new key needs a type; the typed value reaches Canary as a new property."""
    page, stack = steward_page, delivery_stack
    m = kiln_metric()
    page.goto(f"{page.base_url}/admin/catalog/metric/{m.pk}/change/")
    page.locator("#overrides-group .add-row a").click()
    page.fill("#id_overrides-0-key", "Span")
    page.select_option("#id_overrides-0-value_type", "int")
    page.fill("#id_overrides-0-value", "12")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    assert errors(page) == "" and PropertyOverride.objects.get(metric=m, key="Span").value == 12
    in_canary(stack, m, "Span", 12, "the new key in Canary")


def panel_state(page) -> str:
    return page.locator("#delivery-panel .delivery-state").inner_text()


def test_steward_watches_delivery_and_repairs_a_device_canary_lost(steward_page, delivery_stack, screenshot):
    """TC-44: delivery panel journey — the metric page says "in sync" with what Canary acknowledged and
    when; after Canary loses the device's tags, "Push now" changes nothing Canary lacks (nothing differs
    from the acknowledged state) and "Resync this device" sends every metric in full: the mock holds them again."""
    page, stack = steward_page, delivery_stack
    m = kiln_metric()
    sibling = metric(m.device, "Maceira/Kiln/Pressure", datatype=T.Double)
    MetricProperty.objects.create(metric=sibling, key="engUnit", sparkplug_type=T.String, type="string",
                                  string_value="bar")
    in_canary(stack, m, "Hi", 1450.0, "the kiln temperature in Canary")
    in_canary(stack, sibling, "engUnit", "bar", "the kiln pressure in Canary")
    url = f"{page.base_url}/admin/catalog/metric/{m.pk}/change/"

    def reloaded_state() -> str:
        page.goto(url)
        return panel_state(page)

    stack.wait_for(lambda: reloaded_state() == "in sync", 30, "the panel to say in sync")
    panel = page.locator("#delivery-panel").inner_text()
    assert "never" not in panel and "1450.0" in panel and m.canary_id in panel
    screenshot(page, "delivery-in-sync")

    page.click("#delivery-panel button:has-text('Push now')")
    page.wait_for_load_state()
    assert "pushed now" in page.locator(".messagelist").inner_text()

    stack.canary.reset()  # Canary lost everything
    assert stack.canary.properties(m.canary_id) == {}
    page.goto(url)
    page.click("#delivery-panel button:has-text('Resync this device')")
    page.wait_for_load_state()
    assert "2 metric(s)" in page.locator(".messagelist").inner_text()
    in_canary(stack, m, "Hi", 1450.0, "the kiln temperature in Canary again")
    in_canary(stack, sibling, "engUnit", "bar", "the kiln pressure in Canary again")
    stack.wait_for(lambda: reloaded_state() == "in sync", 30, "the panel to say in sync again")


def test_steward_reviews_an_override_whose_edge_value_changed(steward_page, delivery_stack, screenshot):
    """TC-44: needs-review journey — the edge changes a value the steward had overridden; the override is
    listed under "Needs review" with the edge value then and now; "Accept edge value" removes it (audited)
    and the Canary mock holds the new edge value."""
    page, stack = steward_page, delivery_stack
    m = kiln_metric()
    PropertyOverride.objects.create(metric=m, key="engUnit", type="string", string_value="K", updated_by="ana")
    in_canary(stack, m, "engUnit", "K", "the override in Canary")
    MetricProperty.objects.filter(metric=m, key="engUnit").update(string_value="°F")  # a later birth
    page.goto(f"{page.base_url}/admin/catalog/propertyoverride/?review=needed")
    listing = page.locator("#result_list").inner_text()
    assert m.uns_path in listing and "°C" in listing and "°F" in listing
    screenshot(page, "needs-review")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "accept_edge_value")
    page.click("button[name=index]")
    page.wait_for_load_state()
    assert "1 override(s) removed" in page.locator(".messagelist").inner_text()
    assert not PropertyOverride.objects.filter(metric=m).exists()
    in_canary(stack, m, "engUnit", "°F", "the edge value in Canary")


def test_steward_sees_a_quarantined_tag_and_pushes_it_once_canary_accepts(steward_page, delivery_stack, screenshot):
    """TC-44: delivery panel, quarantine — Canary refuses the tag: the panel says quarantined with Canary's
    reason; once Canary accepts it again, "Push now" delivers it and the panel returns to in sync."""
    page, stack = steward_page, delivery_stack
    m = kiln_metric()
    stack.canary.set_faults(tag_errors=[m.canary_id])
    url = f"{page.base_url}/admin/catalog/metric/{m.pk}/change/"

    def reloaded_state() -> str:
        page.goto(url)
        return panel_state(page)

    stack.wait_for(lambda: reloaded_state().startswith("quarantined"), DELIVERY_TIMEOUT, "the panel to say quarantined")
    assert "injected error" in panel_state(page)  # Canary's own words
    screenshot(page, "delivery-quarantined")
    stack.canary.set_faults()  # Canary accepts the tag again
    page.click("#delivery-panel button:has-text('Push now')")
    page.wait_for_load_state()
    in_canary(stack, m, "Hi", 1450.0, "the tag in Canary after Push now")
    stack.wait_for(lambda: reloaded_state() == "in sync", 30, "the panel to say in sync")
