"""What Canary should hold for a metric: effective (override over edge value), mapped, as JSON scalars."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from births import birth, m, receive, topic
from canary import metrics
from canary.effective import effective_targets
from canary.models import PropertyMapping
from catalog.models import Metric, MetricVersion
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.django_db

NESTED = {"limits": {"type": "PropertySet", "value": {"hi": {"type": "Double", "value": 1.5}}},
          "tag": {"type": "String", "value": "°C"}}


def test_a_property_set_reaches_canary_as_its_json_text_encoded_once():
    """TC-04 / CT-02: Canary takes JSON scalars, so a PropertySet goes as its compact JSON text —
    once: the text parses back to the set, not to another string."""
    outcome = receive(topic(), birth(m("Plant/set", cfg=(T.PropertySet, NESTED), lst=(T.PropertySetList, [NESTED]))))
    (metric,) = Metric.objects.filter(device_id=outcome.device_id)
    sent = effective_targets([metric.id])[metric.id].properties
    assert json.loads(sent["cfg"]) == NESTED and json.loads(sent["lst"]) == [NESTED]
    assert sent["cfg"] == json.dumps(NESTED, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def test_an_unchanged_property_set_is_not_in_the_next_versions_diff():
    """TC-07: a re-birth that changes another key leaves the stored set alone and out of the diff."""
    t = topic()
    first = receive(t, birth(m("Plant/set", cfg=(T.PropertySet, NESTED), engUnit=(T.String, "°C"))))
    receive(t, birth(m("Plant/set", cfg=(T.PropertySet, NESTED), engUnit=(T.String, "bar"))))
    version = MetricVersion.objects.filter(metric__device_id=first.device_id, kind="changed").get()
    assert version.change == {"changed": {"engUnit": ["°C", "bar"]}}


def test_a_mapped_key_keeps_its_canary_name_over_a_key_that_carries_it_verbatim():
    """Two keys of one metric sent under one Canary name: never a silent drop — the key the steward
    mapped keeps the name, the other is left out, and the conflict is counted."""
    outcome = receive(topic(), birth(m("Plant/x", engUnit=(T.String, "bar"), **{"Eng Units": (T.String, "old")})))
    (metric,) = Metric.objects.filter(device_id=outcome.device_id)
    before = metrics.MAPPING_CONFLICTS._value.get()
    sent = effective_targets([metric.id], {"engUnit": "Eng Units", "Quality": None})[metric.id].properties
    assert sent == {"Eng Units": "bar"}
    assert metrics.MAPPING_CONFLICTS._value.get() == before + 1


def test_two_keys_cannot_be_mapped_to_one_canary_name():
    """The mapping refuses a second included key under a Canary name another key already has."""
    PropertyMapping.objects.create(key="engUnit", canary_name="Eng Units")
    with pytest.raises(ValidationError, match="already sent under this Canary name"):
        PropertyMapping(key="unit", canary_name="Eng Units").full_clean()
    with pytest.raises(ValidationError, match="already sent under this Canary name"):
        PropertyMapping(key="Eng Units").full_clean()  # verbatim, the same name
    PropertyMapping(key="unit", canary_name="Eng Units", include=False).full_clean()  # excluded: no conflict
