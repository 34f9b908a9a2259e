"""The metric list at 10^6 rows (docs/admin-scale.md): the search uses the trigram indexes, counts
stop early, the filters list what exists (TC-44)."""

from __future__ import annotations

import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from builders import device, metric
from catalog import admin_scale
from catalog.admin import MetricAdmin
from catalog.models import Metric

pytestmark = pytest.mark.django_db


def test_the_admin_search_expression_is_served_by_the_trigram_indexes(rf):
    """TC-44: Django's icontains (UPPER(col::text) LIKE UPPER(%s)) on the three search fields matches
    the indexes' expression, so the planner can use them (sequential scans are switched off here)."""
    model_admin = MetricAdmin(Metric, django_admin.site)
    queryset, _ = model_admin.get_search_results(rf.get("/"), Metric.objects.all(), "Pressure_0432")
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cur.fetchall())
    for column in ("uns_path", "name", "canary_id"):
        assert f"metrics_{column}_trgm" in plan


def test_counts_are_exact_up_to_the_cap_and_estimated_above(monkeypatch):
    """TC-44: at most COUNT_CAP + 1 rows are counted; a larger result shows the planner's estimate."""
    dev = device()
    for i in range(5):
        metric(dev, f"A/T{i}")
    monkeypatch.setattr(admin_scale, "COUNT_CAP", 10)
    assert admin_scale.EstimatedCountPaginator(Metric.objects.all(), 2).count == 5
    monkeypatch.setattr(admin_scale, "COUNT_CAP", 3)
    monkeypatch.setattr(admin_scale, "estimated_rows", lambda qs: 2)
    assert admin_scale.EstimatedCountPaginator(Metric.objects.all(), 2).count == 4  # never below the cap


def test_plant_and_device_filters_list_what_exists(client):
    """TC-44: plants by loose index scan; devices of the chosen plant only; the filtered list renders."""
    a, b, c = device(name="A"), device(name="B"), device(name="C")
    for dev, plant in ((a, "P1"), (b, "P2"), (c, None)):
        Metric.objects.filter(pk=metric(dev).pk).update(plant=plant)
    assert admin_scale.distinct_plants() == ["P1", "P2"]
    user = User.objects.create_superuser("root", password="not-a-real-password-1")
    client.force_login(user)
    url = reverse("admin:catalog_metric_changelist")
    page = client.get(f"{url}?plant=P2")
    device_choices = [spec for spec in page.context["cl"].filter_specs if isinstance(spec, admin_scale.DeviceFilter)]
    assert [title for _, title in device_choices[0].lookup_choices] == [b.uns_path]
    assert page.context["cl"].result_count == 1
    assert client.get(f"{url}?device__id__exact={a.pk}").context["cl"].result_count == 1
    assert client.get(f"{url}?device__id__exact=abc").status_code == 200
