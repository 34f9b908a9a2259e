from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "metasync — UNS metadata catalog"
admin.site.site_title = "metasync"
admin.site.index_title = "Catalog"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]
