"""A slider trial's open reference (ITU-R BS.1534) gets an opaque video token of its own (TrialStimulus.token),
so its URL never matches the hidden reference's among the rated videos. Existing slots keep none: rated videos
are served under their stimulus's token, as before."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("studies", "0006_study_members"),
    ]

    operations = [
        migrations.AddField(
            model_name="trialstimulus",
            name="token",
            field=models.CharField(blank=True, editable=False, help_text="the open reference's own opaque video token; empty for rated videos", max_length=32, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="trialstimulus",
            name="role",
            field=models.CharField(choices=[("test", "Test"), ("reference", "open reference (shown labelled, not rated)"), ("hidden_reference", "Hidden Reference"), ("anchor", "Anchor")], default="test", max_length=20),
        ),
    ]
