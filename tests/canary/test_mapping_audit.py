"""Property-mapping changes are audited (canary.mapping.record_change) and edited in one-line inputs."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from canary.models import MappingChange, PropertyMapping

pytestmark = pytest.mark.django_db



def test_mapping_add_change_are_audited_with_one_line_inputs(client, steward):
    """TC-44: adding a mapping and changing its Canary name in the list each leave an audit row (who,
    before, after); the list edits the Canary name in a one-line input, not a textarea."""
    add = client.post(reverse("admin:canary_propertymapping_add"),
                      {"key": "engUnit", "canary_name": "Units", "include": "on", "note": ""})
    assert add.status_code == 302
    row = PropertyMapping.objects.get(key="engUnit")
    change = MappingChange.objects.get(key="engUnit")
    assert (change.action, change.before, change.changed_by) == ("added", None, "steward:ana")
    assert change.after == {"canary_name": "Units", "include": True, "note": ""}

    listing = client.get(reverse("admin:canary_propertymapping_changelist")).content.decode()
    assert 'type="text" name="form-0-canary_name"' in listing or "textarea" not in listing
    assert "<textarea" not in listing
    mappings = list(PropertyMapping.objects.order_by("key"))
    form = {"form-TOTAL_FORMS": str(len(mappings)), "form-INITIAL_FORMS": str(len(mappings)), "_save": "Save"}
    for i, m in enumerate(mappings):
        form.update({f"form-{i}-id": str(m.pk), f"form-{i}-canary_name": m.canary_name})
        if m.include:
            form[f"form-{i}-include"] = "on"
    index = [m.pk for m in mappings].index(row.pk)
    form[f"form-{index}-canary_name"] = "EngUnits"
    assert client.post(reverse("admin:canary_propertymapping_changelist"), form).status_code == 302
    latest = MappingChange.objects.filter(key="engUnit").first()
    assert latest.action == "changed" and latest.before["canary_name"] == "Units"
    assert latest.after["canary_name"] == "EngUnits"
    assert client.get(reverse("admin:canary_mappingchange_changelist")).status_code == 200

    admin_user = User.objects.create_superuser("root", password="not-a-real-password-2")
    client.force_login(admin_user)  # stewards may not delete mapping rows; an administrator may
    deleted = client.post(reverse("admin:canary_propertymapping_delete", args=[row.pk]), {"post": "yes"})
    assert deleted.status_code == 302
    removed = MappingChange.objects.filter(key="engUnit").first()
    assert (removed.action, removed.after, removed.changed_by) == ("removed", None, "steward:root")
