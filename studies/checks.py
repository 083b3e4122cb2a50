"""Django system checks of the studies app: configuration mistakes reported when the site or a command
starts (`manage.py check`), not as an error on the first page that needs the setting."""
from django.core import checks


@checks.register()
def model_kinds(app_configs=None, **kwargs):
    """EVALSITE_MODEL_KINDS (models registered from outside the package) must parse."""
    from inference.models import KINDS_ENV, ModelKindError, registered_kinds

    try:
        registered_kinds()
    except ModelKindError as exc:
        return [checks.Error(str(exc), hint=f"fix or unset {KINDS_ENV} (docs/models.md)", id="studies.E001")]
    return []
