"""The override editor: a key, one value input and a type, checked by catalog.overrides.

A key the edge sends takes its type from the edge value (an Int8 is checked as an Int8); a new key
needs a type named by the steward. Every bad combination is a form error, never a database error.
How stewards use it: docs/steward-guide.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from catalog.models import Metric, MetricProperty, PropertyOverride, PropertyType
from catalog.overrides import parse_value, typed_columns, validate_key
from sparkplug.datatypes import DataType

FROM_EDGE = ""


@dataclass(frozen=True)
class EdgeProperty:
    key: str
    sparkplug_type: int
    type: str
    value: object  # None when null


def edge_properties(metric: Metric | None) -> dict[str, EdgeProperty]:
    if metric is None or metric.pk is None:
        return {}
    return {p.key: EdgeProperty(p.key, p.sparkplug_type, p.type, p.value)
            for p in MetricProperty.objects.filter(metric=metric).order_by("key")}


def as_text(value: object) -> str:
    """A stored value as the steward would type it again (the inverse of ``parse_value``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class KeyInput(forms.TextInput):
    """A text input offering the edge's keys (a ``<datalist>``), with their types."""

    def __init__(self, edge: dict[str, EdgeProperty], attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.edge = edge

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> Any:
        list_id = f"{name}-keys"
        html = super().render(name, value, {**(attrs or {}), "list": list_id, "autocomplete": "off"}, renderer)
        options = format_html_join("", '<option value="{}">{}</option>',
                                   ((p.key, f"{DataType(p.sparkplug_type).name} at the edge")
                                    for p in self.edge.values()))
        return format_html('{}<datalist id="{}">{}</datalist>', html, list_id, options)


class OverrideForm(forms.ModelForm):
    """One override: key, type (taken from the edge for a known key), value text or null, note."""

    value_type = forms.ChoiceField(
        label="type", required=False,
        choices=[(FROM_EDGE, "as at the edge"), *PropertyType.choices],
        help_text="Leave “as at the edge” for a key the edge sends; name a type for a new key.")
    value = forms.CharField(label="value", required=False, strip=False, widget=forms.TextInput(attrs={"size": 24}))
    null = forms.BooleanField(label="null", required=False, help_text="Override with no value.")
    edge: dict[str, EdgeProperty] = {}  # set per metric by for_metric()

    class Meta:
        model = PropertyOverride
        fields = ("key", "note")
        widgets = {"note": forms.TextInput(attrs={"size": 24})}

    @classmethod
    def for_metric(cls, metric: Metric | None) -> type[OverrideForm]:
        edge = edge_properties(metric)
        return type("OverrideForm", (cls,), {"edge": edge})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["key"].widget = KeyInput(self.edge, attrs={"size": 18})
        self.fields["key"].strip = False  # type: ignore[attr-defined]  # validate_key reports spaces
        if self.instance.pk is not None:
            self.initial.setdefault("null", self.instance.is_null)
            self.initial.setdefault("value", as_text(self.instance.value))
            edge = self.edge.get(self.instance.key)
            self.initial.setdefault("value_type",
                                    FROM_EDGE if edge and edge.type == self.instance.type else self.instance.type)

    def clean_key(self) -> str:
        return validate_key(self.cleaned_data.get("key") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        key = data.get("key")
        if key is None:
            return data  # the key's own error is shown
        chosen, text = data.get("value_type") or FROM_EDGE, data.get("value") or ""
        # The inline's foreign key is left out of Django's constraint checks: check (metric, key) here.
        taken = PropertyOverride.objects.filter(metric_id=self.instance.metric_id, key=key)
        if self.instance.metric_id is not None and taken.exclude(pk=self.instance.pk).exists():
            raise ValidationError({"key": f"{key!r} already has an override on this metric: edit that one."})
        edge = self.edge.get(key)
        if edge is None:
            alike = [k for k in self.edge if k.casefold() == key.casefold()]
            if alike:
                raise ValidationError({"key": f"The edge sends this key as {alike[0]!r} (keys are case-sensitive)."})
            if chosen == FROM_EDGE:
                raise ValidationError({"value_type": f"The edge sends no {key!r}: name a type for a new key."})
            sparkplug: int | str = chosen
        elif chosen in (FROM_EDGE, edge.type):
            sparkplug = edge.sparkplug_type
        else:
            raise ValidationError({"value_type": f"The edge sends {key!r} as {DataType(edge.sparkplug_type).name} "
                                                 f"({edge.type}); an override keeps the edge's type."})
        if data.get("null"):
            if text:
                raise ValidationError({"value": "A null override has no value: clear the value or untick null."})
            value = None
        else:
            try:
                value = parse_value(sparkplug, text)
            except ValidationError as exc:
                raise ValidationError({"value": exc.messages}) from None
        for column, column_value in typed_columns(sparkplug, value).items():
            setattr(self.instance, column, column_value)
        return data


def show(value: object, is_null: bool = False) -> str:
    """A value for the metric page; null is marked so it is not mistaken for an empty string."""
    if is_null or value is None:
        return "∅ (null)"
    return repr(value) if isinstance(value, str) else as_text(value)
