"""Stimuli and render jobs are kept per variant of render settings (studies/variants.py): a cell may have one
stimulus per variant, so studies that render the same cells differently each get their own videos.

Existing rows: a render job that made (or found) its stimulus records the settings of the study that asked
for it, so the job and its stimulus get the variant of those settings — the studies that use them keep
finding them. Every other stimulus (placeholder clips, uploads) and job keeps the variant "" (the defaults).
"""
from django.db import migrations, models

from studies.variants import cell_variant


def variants_from_render_jobs(apps, schema_editor=None):
    """Give each render job that has a stimulus, and that stimulus, the variant of the job's settings."""
    RenderJob = apps.get_model("studies", "RenderJob")
    Stimulus = apps.get_model("studies", "Stimulus")
    jobs = RenderJob.objects.filter(stimulus__isnull=False).values_list("pk", "stimulus_id", "settings",
                                                                         "condition__kind")
    for job_id, stimulus_id, settings, kind in jobs.iterator():
        variant = cell_variant(settings or {}, kind)
        if variant:
            RenderJob.objects.filter(pk=job_id).update(variant=variant)
            Stimulus.objects.filter(pk=stimulus_id).update(variant=variant)


class Migration(migrations.Migration):

    dependencies = [
        ("studies", "0007_trialstimulus_open_reference_token"),
    ]

    operations = [
        migrations.AddField(
            model_name="stimulus",
            name="variant",
            field=models.CharField(blank=True, db_index=True, default="", help_text="key of the render settings it was made with; empty for the defaults", max_length=40),
        ),
        migrations.AddField(
            model_name="renderjob",
            name="variant",
            field=models.CharField(blank=True, default="", help_text="the variant of the stimulus it makes (studies/variants.py)", max_length=40),
        ),
        migrations.RemoveConstraint(
            model_name="stimulus",
            name="one_stimulus_per_cell",
        ),
        migrations.AddConstraint(
            model_name="stimulus",
            constraint=models.UniqueConstraint(fields=("utterance", "condition", "embodiment", "variant"), name="one_stimulus_per_cell"),
        ),
        migrations.RemoveConstraint(
            model_name="renderjob",
            name="one_render_job_per_cell",
        ),
        migrations.AddConstraint(
            model_name="renderjob",
            constraint=models.UniqueConstraint(fields=("utterance", "condition", "embodiment", "variant"), name="one_render_job_per_cell"),
        ),
        # Last, so no schema change follows row updates in the same transaction (PostgreSQL refuses that
        # while deferred constraint checks are pending).
        migrations.RunPython(variants_from_render_jobs, migrations.RunPython.noop),
    ]
