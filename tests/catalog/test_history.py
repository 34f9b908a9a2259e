"""History that reads (catalog.history): versions as key-level lines, filterable in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from builders import device, metric
from catalog.history import key_line, lines
from catalog.models import MetricVersion, VersionKey


@pytest.mark.unit
def test_versions_become_key_level_lines():
    """TC-44: each key of a version's diff is one line "key: old → new"; overrides and kept overrides say so."""
    change = {"datatype": [9, 10], "added": {"engUnit": "°C"}, "changed": {"Hi": [1450.0, 1500.0]},
              "removed": {"Lo": -10}, "override_changed": {"engUnit": ["°C", "bar"]},
              "override_kept": {"Hi": {"edge": [1450.0, 1500.0], "override": 250.5}}}
    assert [str(line) for line in lines(change)] == [
        "datatype: 9 → 10", "engUnit: (none) → °C", "Hi: 1450.0 → 1500.0", "Lo: -10 → (none)",
        "engUnit (override): °C → bar", "Hi (override kept): edge 1450.0 → edge 1500.0, override 250.5 kept"]
    created = lines({"name": "T", "uns_path": "a/T", "datatype": 9, "added": {"k": None}})
    assert [str(line) for line in created] == ["name: (none) → T", "uns_path: (none) → a/T", "datatype: (none) → 9",
                                               "k: (none) → ∅"]


@pytest.mark.django_db
def test_version_list_reads_and_filters_by_device_plant_kind_and_date(client):
    """TC-44: the version list shows "engUnit: °C → bar" with who and kind; filters by device, plant, kind, date."""
    user = User.objects.create_user("ana", password="not-a-real-password-1", is_staff=True)
    user.groups.add(Group.objects.get(name="Data steward"))
    client.force_login(user)
    kiln, mill = device("Secil", "Portugal", "Kiln"), device("Secil", "Portugal", "Mill")
    a, b = metric(kiln, "Maceira/Kiln/T"), metric(mill, "Outao/Mill/T")
    type(a).objects.filter(pk=a.pk).update(plant="Maceira")
    MetricVersion.objects.create(metric=a, kind="steward", change={"override_added": {"engUnit": "bar"}},
                                 changed_by="steward:ana")
    MetricVersion.objects.create(metric=b, kind="changed", change={"changed": {"engUnit": ["°C", "K"]}},
                                 changed_by="birth:7")
    url = reverse("admin:catalog_metricversion_changelist")
    text = client.get(url).content.decode()
    assert "engUnit (override): (none) → bar" in text and "engUnit: °C → K" in text and "steward:ana" in text
    for query, shown, hidden in [({"kind__exact": "steward"}, a, b), ({"plant": "Maceira"}, a, b),
                                 ({"metric__device__id__exact": mill.pk}, b, a)]:
        response = client.get(url, query)
        assert response.status_code == 200
        page = response.content.decode()
        assert shown.uns_path in page and hidden.uns_path not in page, query
    today = MetricVersion.objects.first().changed_at
    response = client.get(url, {"changed_at__year": today.year, "changed_at__month": today.month,
                                "changed_at__day": today.day})
    assert response.status_code == 200 and a.uns_path in response.content.decode()
    metric_page = client.get(reverse("admin:catalog_metric_change", args=[a.pk])).content.decode()
    assert "engUnit (override): (none) → bar" in metric_page


@pytest.mark.django_db
def test_history_as_key_level_rows_one_per_key_filterable(steward, client):
    """TC-44: the key-level history lists one row per key of each version — key, old → new, who, when,
    kind — read from the database view, so it pages and filters by kind, plant, device, key and date;
    every row of the view is a line of its version, and the steward may read it."""
    kiln, mill = device("Secil", "Portugal", "Kiln"), device("Secil", "Portugal", "Mill")
    a, b = metric(kiln, "Maceira/Kiln/T"), metric(mill, "Outao/Mill/T")
    type(a).objects.filter(pk=a.pk).update(plant="Maceira")
    change = {"datatype": [9, 10], "added": {"engUnit": "°C"}, "changed": {"Hi": [1450.0, 1500.0]},
              "removed": {"Lo": -10}, "override_changed": {"engUnit": ["°C", "bar"]},
              "override_kept": {"Hi": {"edge": [1450.0, 1500.0], "override": 250.5}}}
    version = MetricVersion.objects.create(metric=a, kind="steward", change=change, changed_by="steward:ana")
    MetricVersion.objects.create(metric=b, kind="changed", change={"changed": {"engUnit": ["°C", "K"]}},
                                 changed_by="birth:7")
    rows = VersionKey.objects.filter(version=version)
    assert sorted(str(key_line(r.part, r.key, r.old, r.new)) for r in rows) == sorted(str(x) for x in lines(change))
    url = reverse("admin:catalog_versionkey_changelist")
    page = client.get(url).content.decode()
    assert page.count("Maceira/Kiln/T") == 6 and page.count("Outao/Mill/T") == 1  # one row per key
    assert "°C" in page and "bar" in page and "steward:ana" in page
    for query, shown, hidden in [({"kind__exact": "changed"}, b, a), ({"plant": "Maceira"}, a, b),
                                 ({"metric__device__id__exact": mill.pk}, b, a), ({"q": "Lo"}, a, b)]:
        response = client.get(url, query)
        assert response.status_code == 200
        text = response.content.decode()
        assert shown.uns_path in text and hidden.uns_path not in text, query
    response = client.get(url, {"q": "Lo"})
    assert response.content.decode().count("Maceira/Kiln/T") == 1  # only the Lo row
