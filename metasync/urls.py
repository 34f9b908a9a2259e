"""The web's URLs (composition root: wires the admin and monitoring's endpoints)."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from monitoring import health, pipeline

admin.site.site_header = "metasync — UNS metadata catalog"
admin.site.site_title = "metasync"
admin.site.index_title = "Catalog"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # django-prometheus's metrics plus the pipeline state (monitoring/pipeline.py, docs/metrics.md)
    path("metrics", pipeline.metrics_view, name="prometheus-django-metrics"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
