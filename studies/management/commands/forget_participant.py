"""`manage.py forget_participant SLUG (--participant UUID | --prolific PID | --mturk WORKER_ID | --lab SEAT)
[--yes]` — delete everything stored of one participant, on their request (data protection): responses,
exclusions, trials, watch records, the session; reports that contain their rows are listed, and deleted
too with --yes. Without --yes it only says what would be deleted."""
from django.core.management.base import BaseCommand, CommandError

from studies import reporting, services
from studies.models import Study


class Command(BaseCommand):
    help = ("Delete one participant's data on their request: find them by the platform's id or by their "
            "recruiting service's id (matched through the stored keyed hash); show what would go; --yes deletes it "
            "and the reports that hold their rows.")

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the study's slug")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--participant", help="the participant id (the `participant` column of the responses CSV)")
        who.add_argument("--prolific", help="the person's Prolific ID")
        who.add_argument("--mturk", help="the person's MTurk worker ID")
        who.add_argument("--lab", help="the lab seat / ID the person was given")
        parser.add_argument("--yes", action="store_true", help="really delete (otherwise only show what would go)")

    def handle(self, *args, **opts):
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}")
        source = next((s for s in ("prolific", "mturk", "lab") if opts[s]), None)
        try:
            participant = services.participant_find(study=study, public_id=opts["participant"], source=source,
                                                    external_id=opts[source] if source else None)
        except services.ServiceError as exc:
            raise CommandError(str(exc)) from None
        reports = reporting.reports_mentioning(study, str(participant.public_id))
        n_responses = participant.responses.count()
        self.stdout.write(f"participant {participant.public_id} ({participant.source}, {participant.status}, "
                          f"started {participant.started_at:%Y-%m-%d %H:%M}): {n_responses} response(s), "
                          f"{participant.trials.count()} trial(s)")
        for report in reports:
            self.stdout.write(f"  in report {report.pk} of {report.created_at:%Y-%m-%d %H:%M}")
        if not opts["yes"]:
            self.stdout.write("nothing deleted; run again with --yes to delete all of the above")
            return
        counts = services.participant_forget(participant=participant)
        for report in reports:
            reporting.report_delete(report)
        self.stdout.write(f"deleted participant {participant.public_id}: " +
                          ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items()) +
                          f", {len(reports)} report(s). Stimulus bundles exported earlier are files you hold: "
                          "export them again.")
