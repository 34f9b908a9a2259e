from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from metasync import health, metrics

admin.site.site_header = "metasync — UNS metadata catalog"
admin.site.site_title = "metasync"
admin.site.index_title = "Catalog"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # django-prometheus's metrics plus the pipeline state (metasync/metrics.py, docs/metrics.md)
    path("metrics", metrics.metrics_view, name="prometheus-django-metrics"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
