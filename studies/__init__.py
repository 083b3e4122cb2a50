"""The domain app: studies, stimuli, participants, trials and responses; services (writes), selectors
(reads), participant and researcher views, Celery tasks, management commands and analysis."""
