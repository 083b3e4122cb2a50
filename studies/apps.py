"""App config for the studies app."""
from django.apps import AppConfig


class StudiesConfig(AppConfig):
    name = "studies"
    verbose_name = "Perceptual studies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        import importlib

        importlib.import_module(f"{self.name}.checks")  # registers the app's system checks
