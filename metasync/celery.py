"""The Celery application, configured from Django settings (``CELERY_*``)."""

from celery import Celery

from metasync.bootstrap import configure_or_exit

configure_or_exit()

app = Celery("metasync")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
