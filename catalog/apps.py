from django.apps import AppConfig


class CatalogConfig(AppConfig):
    """The canonical, versioned metadata catalog (schema ``uns_meta``) and its admin."""

    name = "catalog"
    verbose_name = "Catalog"
