"""metasync project package: settings, Celery app, URLs, WSGI."""

from metasync.celery import app as celery_app

__all__ = ["celery_app"]
