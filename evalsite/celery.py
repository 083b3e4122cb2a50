"""The Celery app: queues `inference`, `render`, `hardware`; tasks acknowledged late and re-queued when
the worker running them dies, so a killed worker never loses work (tasks must be idempotent)."""
import logging
import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")

app = Celery("evalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUES = ("inference", "render", "hardware")
app.conf.update(
    task_queues=[Queue(name) for name in QUEUES],
    task_default_queue="render",
    task_routes={
        "studies.tasks.inference_*": {"queue": "inference"},
        "studies.tasks.render_*": {"queue": "render"},
        "studies.tasks.hardware_*": {"queue": "hardware"},
        # significance reports are CPU work of the same kind as evaluation: the inference workers do them
        "studies.tasks.report_*": {"queue": "inference"},
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)
app.autodiscover_tasks()


def _quiet_embedded_broker_host(record) -> bool:
    """The embedded broker (filesystem://) has no host by design; kombu warns about it on every connection."""
    return "No hostname was supplied" not in record.getMessage()


logging.getLogger("kombu.connection").addFilter(_quiet_embedded_broker_host)
