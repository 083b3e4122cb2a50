"""The domain app: studies, stimuli, participants, trials and responses; services (writes), selectors
(reads), participant and researcher views, Celery tasks, management commands and analysis.

`__version__` is the platform's (evalsite's) version, which reports (summary.json `versions.evalsite`) and
stimulus bundles (manifest.json `platform_version`) record. It lives here rather than in the evalsite
package because imports run evalsite → studies, and studies/analysis must not import the Django project;
`evalsite.__version__` is the same object.
"""
__version__ = "0.1.0"
