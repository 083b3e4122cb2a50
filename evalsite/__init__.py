"""The Django project: settings from the environment, URLs, the Celery app. No domain logic here.
`__version__`, the platform's version, is defined in studies/__init__.py (see there why)."""
from studies import __version__

from .celery import app as celery_app

__all__ = ["celery_app", "__version__"]
