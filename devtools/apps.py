from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Development and test aids: the Canary mock, the edge simulator, demo users.

    Installed only when ``METASYNC_DEVTOOLS`` is on (the dev stack and the tests); never in
    production images' settings (docs/architecture.md).
    """

    name = "devtools"
    verbose_name = "Development tools"
