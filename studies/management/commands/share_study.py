"""`manage.py share_study SLUG [USER --role ROLE | USER --remove]` — choose who else works on a study and what
they may do (viewer, analyst, manager); with only the slug, list the study's researchers."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from studies import services
from studies.models import Study, StudyMember


class Command(BaseCommand):
    help = ("Share a study with another researcher as viewer (dashboard, gallery, finished reports), analyst "
            "(also participants' data and new reports) or manager (also open/close, pilot link, renders, new "
            "versions); --remove takes them off; with only SLUG, list who is on the study.")

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the study's slug")
        parser.add_argument("user", nargs="?", help="the researcher's username")
        parser.add_argument("--role", choices=StudyMember.Role.values, help="the role to give")
        parser.add_argument("--remove", action="store_true", help="take the researcher off the study")

    def handle(self, *args, **opts):
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}; `manage.py load_study FILE` creates one")
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user named {opts['user']!r}; create it in the admin or with "
                                   "`manage.py createsuperuser`")
            if opts["remove"] == bool(opts["role"]):
                raise CommandError("give either --role ROLE or --remove")
            try:
                services.study_share(study=study, user=user, role=None if opts["remove"] else opts["role"])
            except services.ServiceError as exc:
                raise CommandError(str(exc)) from None
        elif opts["role"] or opts["remove"]:
            raise CommandError("name the researcher: share_study SLUG USER --role ROLE")
        owner = study.owner.username if study.owner else "(no owner)"
        self.stdout.write(f"{study.slug}: {owner} (owner)")
        for member in study.members.select_related("user"):
            self.stdout.write(f"{study.slug}: {member.user.username} ({member.role})")
