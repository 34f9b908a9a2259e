"""WSGI entry point for gunicorn (`gunicorn metasync.wsgi`)."""

from metasync.bootstrap import configure_or_exit

configure_or_exit()

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
