"""Collaborators get a role per study (StudyMember). Collaborators of before had every right, so they become
managers; the plain many-to-many table is replaced by the membership table."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def collaborators_to_members(apps, schema_editor):
    Study = apps.get_model("studies", "Study")
    StudyMember = apps.get_model("studies", "StudyMember")
    for study in Study.objects.all():
        for user in study.collaborators.all():
            StudyMember.objects.get_or_create(study=study, user=user, defaults={"role": "manager"})


def members_to_collaborators(apps, schema_editor):
    Study = apps.get_model("studies", "Study")
    StudyMember = apps.get_model("studies", "StudyMember")
    for member in StudyMember.objects.all():
        Study.objects.get(pk=member.study_id).collaborators.add(member.user_id)


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("studies", "0005_robot_records"),
    ]

    operations = [
        migrations.CreateModel(
            name="StudyMember",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("role", models.CharField(
                    choices=[("viewer", "viewer: dashboard, gallery, preview, finished reports"),
                             ("analyst", "analyst: also the participants' data (responses CSV, admin) and new reports"),
                             ("manager", "manager: also opening and closing, pilot link, renders, new versions of the YAML")],
                    default="viewer", max_length=10)),
                ("added_at", models.DateTimeField(auto_now_add=True)),
                ("study", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="members",
                                            to="studies.study")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                           related_name="study_memberships", to=settings.AUTH_USER_MODEL)),
            ],
            options={"ordering": ["study", "user"], "unique_together": {("study", "user")}},
        ),
        migrations.RunPython(collaborators_to_members, members_to_collaborators),
        migrations.RemoveField(model_name="study", name="collaborators"),
        migrations.AddField(
            model_name="study",
            name="collaborators",
            field=models.ManyToManyField(blank=True, related_name="+", through="studies.StudyMember",
                                         to=settings.AUTH_USER_MODEL),
        ),
    ]
