"""Admin views of the bulk workbench (docs/steward-bulk.md): bulk correction, export and import of
a filtered metric list. The selection is the changelist's own: its query string (filters, search) and, unless
"select all" was used, the ticked ids; the domain work is ``catalog.bulk``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from catalog import bulk, exchange, validation
from catalog.models import BulkChange, MetricProperty, PropertyOverride, PropertyType, StagedImport
from metasync.admin import ReadOnlyAdminMixin

SAMPLE_SIZE = 10
PREVIEW_ROWS = 500  # rows of each kind shown in the dry run (the counts cover all)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSX_MAX_METRICS = 200_000  # about 800,000 rows at 4 keys a metric; Excel's own limit is 1,048,576
OVERRIDE_PERMS = ("catalog.add_propertyoverride", "catalog.change_propertyoverride",
                  "catalog.delete_propertyoverride")


class BulkOverrideForm(forms.Form):
    action = forms.ChoiceField(choices=[("set", "Set the override"), ("clear", "Clear the override")],
                               widget=forms.RadioSelect, initial="set")
    key = forms.CharField(max_length=validation.MAX_KEY_BYTES, help_text="The property key, e.g. engUnit.")
    type = forms.ChoiceField(choices=PropertyType.choices, initial=PropertyType.STRING, required=False)
    value = forms.CharField(required=False, strip=False, max_length=validation.MAX_STRING_BYTES,
                            help_text="As text: 250.5, true, 2026-01-31T08:00:00Z, {\"a\": 1} …")
    is_null = forms.BooleanField(required=False, label="Set to null")
    why = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                          help_text="Recorded with the bulk change.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            data["key"] = bulk.check_key(data.get("key") or "")
        except bulk.BadValue as exc:
            self.add_error("key", str(exc))
        data["override"] = None
        if data.get("action") == "set":
            try:
                data["override"] = bulk.parse_value(data.get("type") or "", data.get("value") or "",
                                                    is_null=bool(data.get("is_null")))
            except bulk.BadValue as exc:
                self.add_error("value" if data.get("type") else "type", str(exc))
        return data


class ImportForm(forms.Form):
    sheet = forms.FileField(help_text="CSV (UTF-8) or XLSX with the columns of an export.")
    why = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                          help_text="Recorded with the import.")


class BulkAdminMixin(admin.ModelAdmin):
    """Adds the bulk correction action and view to the metric admin."""

    actions = ["bulk_override", "export_csv", "export_xlsx"]

    def get_urls(self) -> list[URLPattern]:
        own = [path("bulk/", self.admin_site.admin_view(self.bulk_view), name="catalog_metric_bulk"),
               path("import/", self.admin_site.admin_view(self.import_view), name="catalog_metric_import")]
        return own + super().get_urls()

    @admin.action(description="Export properties and overrides of the selected metrics (CSV)")
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseBase:
        response = StreamingHttpResponse(exchange.csv_lines(exchange.export_rows(queryset)),
                                         content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="metric-properties.csv"'
        return response

    @admin.action(description="Export properties and overrides of the selected metrics (XLSX)")
    def export_xlsx(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if queryset.order_by()[: XLSX_MAX_METRICS + 1].count() > XLSX_MAX_METRICS:
            self.message_user(request, f"An XLSX export holds at most {XLSX_MAX_METRICS:,} metrics (it is built in "
                                       "memory); narrow the filter or export CSV.", messages.ERROR)
            return None
        response = HttpResponse(exchange.xlsx_bytes(exchange.export_rows(queryset)), content_type=XLSX)
        response["Content-Disposition"] = 'attachment; filename="metric-properties.xlsx"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload -> dry run (per-row diff and errors, the sheet staged) -> confirm -> applied, or nothing."""
        if not request.user.has_perms(OVERRIDE_PERMS):
            raise PermissionDenied
        context: dict[str, Any] = {**self.admin_site.each_context(request), "opts": self.model._meta,
                                   "title": "Import overrides", "changelist_url":
                                       reverse("admin:catalog_metric_changelist")}
        form = ImportForm(request.POST or None, request.FILES or None)
        user = request.user.get_username()
        if request.method == "POST" and "_confirm" in request.POST:
            staged_id = request.POST.get("staged", "")
            staged = StagedImport.objects.filter(pk=int(staged_id), uploaded_by=user).first() \
                if staged_id.isdigit() else None
            why = request.POST.get("why", "")
            if staged is None:
                self.message_user(request, "That upload is no longer staged; upload the sheet again.", messages.ERROR)
                return HttpResponseRedirect(request.path)
            try:
                change = exchange.apply_import(staged.rows, user=user, why=why, filename=staged.filename)
            except bulk.BadValue as exc:
                self.message_user(request, f"Nothing was imported: {exc}", messages.ERROR)
                return HttpResponseRedirect(request.path)
            staged.delete()
            self.message_user(request, f"Import {change.pk} ({staged.filename}): overrides of {change.metrics} "
                                       "metric(s) changed; Canary receives them shortly.", messages.SUCCESS)
            return HttpResponseRedirect(context["changelist_url"])
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["sheet"]
            try:
                rows = exchange.read_sheet(upload.name, upload.read())
            except bulk.BadValue as exc:
                form.add_error("sheet", str(exc))
            else:
                plan = exchange.plan_import(rows)
                StagedImport.objects.filter(uploaded_by=user).delete()  # one staged sheet per steward
                staged = StagedImport.objects.create(filename=upload.name, rows=rows, uploaded_by=user)
                context |= {"plan": plan, "staged": staged, "why": form.cleaned_data["why"],
                            "counts": {s: plan.count(s) for s in ("add", "change", "clear", "unchanged", "error")},
                            "shown_errors": plan.errors[:PREVIEW_ROWS], "shown_changes": plan.changes[:PREVIEW_ROWS]}
        context["form"] = form
        return TemplateResponse(request, "admin/catalog/metric/import.html", context)

    @admin.action(description="Set or clear an override on the selected metrics …")
    def bulk_override(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return HttpResponseRedirect(bulk_url(request, "admin:catalog_metric_bulk"))

    def selection(self, request: HttpRequest) -> QuerySet:
        """The metrics the changelist of this request's query string shows (every page)."""
        return self.get_changelist_instance(request).get_queryset(request)

    def bulk_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perms(OVERRIDE_PERMS):
            raise PermissionDenied
        changelist = reverse("admin:catalog_metric_changelist")
        try:
            metrics = self.selection(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(f"{changelist}?e=1")
        form = BulkOverrideForm(request.POST or None)
        confirmed = request.method == "POST" and "_confirm" in request.POST
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            if confirmed:
                change = bulk.apply_bulk(metrics, data["key"], data["override"], user=request.user.get_username(),
                                         why=data["why"], selection=_filters(request).urlencode())
                self.message_user(request, f"Bulk change {change.pk}: {data['key']} {change.action} on "
                                           f"{change.metrics} metric(s); Canary receives them shortly.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(f"{changelist}?{_filters(request, keep_ids=False).urlencode()}")
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": "Bulk correction",
            "form": form, "count": metrics.count(), "sample": sample(metrics, form),
            "confirm": request.method == "POST" and form.is_valid() and not confirmed,
            "changelist_url": f"{changelist}?{_filters(request, keep_ids=False).urlencode()}",
        }
        return TemplateResponse(request, "admin/catalog/metric/bulk.html", context)


def bulk_url(request: HttpRequest, name: str) -> str:
    """``name``'s URL with the changelist's query string, plus the ticked ids unless "select all" was used."""
    query = _filters(request)
    if request.POST.get("select_across") != "1":
        query["id__in"] = ",".join(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
    return f"{reverse(name)}?{query.urlencode()}"


def _filters(request: HttpRequest, keep_ids: bool = True) -> Any:
    query = request.GET.copy()
    if not keep_ids:
        query.pop("id__in", None)
    return query


def sample(metrics: QuerySet, form: BulkOverrideForm) -> list[dict[str, object]]:
    """The first metrics of the selection with the edge value and the override of the chosen key."""
    rows = list(metrics.order_by("uns_path")[:SAMPLE_SIZE].values("id", "uns_path"))
    key = (form.data.get("key") or "").strip()
    if key:
        ids = [row["id"] for row in rows]
        edge = {p.metric_id: p for p in MetricProperty.objects.filter(metric_id__in=ids, key=key)}
        over = {o.metric_id: o for o in PropertyOverride.objects.filter(metric_id__in=ids, key=key)}
        for row in rows:
            row["edge"] = edge[row["id"]].value if row["id"] in edge else "—"
            row["override"] = over[row["id"]].value if row["id"] in over else "—"
    return rows


@admin.register(BulkChange)
class BulkChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit of bulk corrections and imports; each changed metric's version names its id."""

    list_display = ("id", "changed_at", "changed_by", "action", "key", "metrics", "why")
    list_filter = ("action",)
    search_fields = ("key", "why", "changed_by", "selection")
    fields = ("action", "key", "value", "selection", "why", "metrics", "changed_by", "changed_at")
    readonly_fields = fields
