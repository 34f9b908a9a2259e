"""The quarantine in the admin: read-only list, search by canary id, and "Push again" for stewards."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.urls import reverse

from builders import device, metric
from canary.models import Quarantine

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:canary_quarantine_changelist"


@pytest.fixture
def quarantined():
    dev = device("Secil", "Portugal", "Kiln")
    held = [metric(dev, f"Area/Held{i}") for i in range(2)]
    for i, m in enumerate(held):
        Quarantine.objects.create(metric_id=m.id, canary_id=m.canary_id, batch_id=100 + i,
                                  reason=f'tag "{m.uns_path}": refused by Canary {i}')
    return held


def login(client, *groups: str, name: str = "steward") -> User:
    user = User.objects.create_user(name, password="not-a-real-password-1", is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=groups))
    client.force_login(user)
    return user


def pending(ids: list[int]) -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT metric_id FROM uns_meta.sync_pending WHERE metric_id = ANY(%s)", [ids])
        return {r[0] for r in cur.fetchall()}


def test_steward_pushes_quarantined_tags_again_from_the_admin(client, quarantined):
    """TC-43: a data steward sees the quarantine (canary id, reason, time, attempts), finds a tag by
    its canary id and runs "Push again": the chosen metrics are pending, due now; the rows stay
    until Canary acknowledges; nothing on the page can add, edit or delete them."""
    login(client, "Data steward")
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    text = page.content.decode()
    assert "refused by Canary 0" in text and "Push again" in text and "delete_selected" not in text
    found = client.get(reverse(CHANGELIST), {"q": quarantined[1].canary_id}).content.decode()
    assert "refused by Canary 1" in found and "refused by Canary 0" not in found

    first = quarantined[0].id
    answer = client.post(reverse(CHANGELIST), {"action": "push_again", "_selected_action": [first]}, follow=True)

    assert "1 quarantined tag(s) will be pushed to Canary again" in answer.content.decode()
    assert pending([m.id for m in quarantined]) == {first}
    assert Quarantine.objects.count() == 2
    assert client.get(reverse("admin:canary_quarantine_add")).status_code == 403


def test_push_again_needs_the_release_permission(client, quarantined):
    """A staff user who may only view the quarantine gets no "Push again"."""
    user = login(client, name="viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_quarantine"))
    text = client.get(reverse(CHANGELIST)).content.decode()
    assert "refused by Canary 0" in text and "Push again" not in text
    client.post(reverse(CHANGELIST), {"action": "push_again", "_selected_action": [quarantined[0].id]})
    assert pending([m.id for m in quarantined]) == set()
