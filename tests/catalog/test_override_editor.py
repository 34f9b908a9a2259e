"""The override editor on the metric page (catalog.forms): typed values, form errors, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from builders import device, metric
from catalog.models import MetricProperty, MetricVersion, PropertyOverride
from catalog.propvalues import f32
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.django_db



def prop(m, key, sptype, kind, **value):
    return MetricProperty.objects.create(metric=m, key=key, sparkplug_type=sptype, type=kind, **value)


@pytest.fixture
def kiln():
    m = metric(device("Secil", "Portugal", "Kiln"), "Maceira/Kiln/Temperature", datatype=T.Double)
    prop(m, "engUnit", T.String, "string", string_value="°C")
    prop(m, "Hi", T.Double, "double", double_value=1450.0)
    prop(m, "Gain", T.Float, "float", float_value=0.5)
    prop(m, "Lo", T.Int8, "int", int_value=-10)
    prop(m, "Count", T.UInt64, "long", long_value=Decimal(7))
    prop(m, "Enabled", T.Boolean, "boolean", boolean_value=True)
    prop(m, "Since", T.DateTime, "datetime", datetime_value=datetime(2026, 1, 1, tzinfo=UTC))
    prop(m, "Meta", T.PropertySet, "json", json_value={"a": {"type": 12, "value": "x"}})
    return m


def post(client, m, rows):
    """Submit the metric page with new override rows ``[{key, value_type, value, null, note}]``."""
    form = {"overrides-TOTAL_FORMS": str(len(rows)), "overrides-INITIAL_FORMS": "0"}
    for prefix in ("properties", "versions", "lineage"):
        form.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    for i, row in enumerate(rows):
        for name, value in row.items():
            if name == "null":
                if value:
                    form[f"overrides-{i}-null"] = "on"
            else:
                form[f"overrides-{i}-{name}"] = value
    return client.post(reverse("admin:catalog_metric_change", args=[m.pk]), form)


GOOD = [
    ({"key": "Hi", "value": "250.5"}, 250.5),  # the 500 of the issue
    ({"key": "Gain", "value": "0.1"}, f32(0.1)),
    ({"key": "Lo", "value": "-128"}, -128),
    ({"key": "Count", "value": "18446744073709551615"}, 2**64 - 1),
    ({"key": "Enabled", "value": "false"}, False),
    ({"key": "Since", "value": "2026-12-07T21:40:00Z"}, datetime(2026, 12, 7, 21, 40, tzinfo=UTC)),
    ({"key": "Meta", "value": '{"b": {"type": 3, "value": 1}}'}, {"b": {"type": 3, "value": 1}}),
    ({"key": "engUnit", "value": "bar"}, "bar"),
    ({"key": "engUnit", "value": ""}, ""),
    ({"key": "Hi", "null": True}, None),
    ({"key": "Description", "value_type": "string", "value": "Kiln shell"}, "Kiln shell"),
    ({"key": "Span", "value_type": "double", "value": "12.5"}, 12.5),
    ({"key": "Hi", "value_type": "double", "value": "1e3"}, 1000.0),
]


@pytest.mark.parametrize(("row", "expected"), GOOD)
def test_good_override_is_stored_typed_and_versioned(client, steward, kiln, row, expected):
    """TC-44: a key from the edge (its type) or a new key with a type, one value input: stored in the
    right typed column, versioned as steward:<user>."""
    response = post(client, kiln, [{"note": "checked", **row}])
    assert response.status_code == 302, response.content.decode()[-3000:]
    override = PropertyOverride.objects.get(metric=kiln, key=row["key"])
    got = f32(override.value) if override.type == "float" else override.value  # real: read back at its precision
    assert got == expected and override.is_null == (expected is None)
    assert override.updated_by == "ana"
    version = MetricVersion.objects.get(metric=kiln, kind="steward")
    assert version.changed_by == "steward:ana" and row["key"] in version.change["override_added"]


BAD = [
    ({"key": "Hi", "value": "abc"}, "not a number"),
    ({"key": "Hi", "value": ""}, "not a number"),
    ({"key": "Hi", "value": "nan"}, "finite"),
    ({"key": "Hi", "value": "1e999"}, "finite"),
    ({"key": "Gain", "value": "1e39"}, "beyond the largest Float"),
    ({"key": "Lo", "value": "128"}, "outside the range of Int8"),
    ({"key": "Lo", "value": "1.5"}, "not a whole number"),
    ({"key": "Count", "value": "-1"}, "outside the range of UInt64"),
    ({"key": "Enabled", "value": "maybe"}, "not a boolean"),
    ({"key": "Since", "value": "tomorrow"}, "not a date and time"),
    ({"key": "Since", "value": "10000-01-01"}, "not a date and time"),
    ({"key": "Meta", "value": '{"a": NaN}'}, "NaN is not allowed"),
    ({"key": "Meta", "value": "[1]"}, "JSON object"),
    ({"key": "Meta", "value": "{"}, "Not valid JSON"),
    ({"key": "engUnit", "value": "a\x00b"}, "Null characters are not allowed"),
    ({"key": "engUnit", "value": "x" * 70_000}, "bytes long"),
    ({"key": "Hi", "value_type": "string", "value": "x"}, "keeps the edge"),
    ({"key": "Hi", "value": "1", "null": True}, "A null override has no value"),
    ({"key": "engunit", "value": "bar"}, "case-sensitive"),
    ({"key": "Typo", "value": "bar"}, "name a type for a new key"),
    ({"key": "k" * 300, "value_type": "string", "value": "x"}, "bytes long"),
    ({"key": " engUnit", "value": "bar"}, "spaces"),
    ({"key": "", "value": "bar"}, "This field is required"),
    ({"key": "x\x00", "value_type": "string", "value": "x"}, "Null characters are not allowed"),
    ({"key": "Span", "value_type": "decimal", "value": "1"}, "Select a valid choice"),
    ({"key": "Span", "value_type": "json", "value": "3"}, "object or list"),
]


@pytest.mark.parametrize(("row", "message"), BAD)
def test_bad_override_is_a_form_error_never_a_500(client, steward, kiln, row, message):
    """TC-44: every bad combination (type, range, length, JSON, non-finite, key) is a form error on the page;
    nothing is stored."""
    response = post(client, kiln, [row])
    assert response.status_code == 200, response.status_code
    assert message in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert not PropertyOverride.objects.filter(metric=kiln).exists()


def test_same_key_twice_and_existing_override_are_form_errors(client, steward, kiln):
    """TC-44: a key overridden twice on one page, or again beside its existing override, is a form error."""
    response = post(client, kiln, [{"key": "Hi", "value": "1"}, {"key": "Hi", "value": "2"}])
    assert response.status_code == 200 and "duplicate" in response.content.decode()
    assert post(client, kiln, [{"key": "Hi", "value": "1"}]).status_code == 302
    response = post(client, kiln, [{"key": "Hi", "value": "2"}])
    assert response.status_code == 200 and "already has an override" in response.content.decode().replace("&#x27;", "'")


def test_metric_page_shows_edge_override_and_effective_side_by_side(client, steward, kiln):
    """TC-44: the metric page shows each key's edge value, override and effective value; the override
    row shows the edge value it replaces and offers the edge's keys."""
    assert post(client, kiln, [{"key": "Hi", "value": "250.5"}]).status_code == 302
    page = client.get(reverse("admin:catalog_metric_change", args=[kiln.pk])).content.decode()
    assert '<datalist id="overrides-0-key-keys"' in page or 'list="overrides-0-key-keys"' in page
    assert "1450.0" in page and "250.5" in page and "effective value" in page.lower()
    assert 'value="250.5"' in page  # the override is edited as the text typed
