"""`manage.py prolific SLUG` — what to paste into Prolific's study form: the study URL, the completion code
and URL, the screened-out code, and the hourly pay the reward works out to (with a warning when it is
under a fair minimum: by default Prolific's recommended $12/h; see studies/recruiting/prolific.py)."""
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from studies.models import Study
from studies.recruiting import prolific


def _dollars(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CommandError(f"--fair-hourly {text!r} is not an amount of dollars; write e.g. 12") from None
    if not value.is_finite() or value < 0:
        raise CommandError(f"--fair-hourly {text!r} is not an amount of dollars; write e.g. 12")
    return value


class Command(BaseCommand):
    help = ("Print the study URL, completion and screened-out codes to enter in Prolific, and the reward per "
            "hour at the spec's estimated minutes.")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--fair-hourly", default=str(prolific.RECOMMENDED_HOURLY_USD),
            help="warn when the pay per hour is under this many dollars (default %(default)s: Prolific's "
                 "recommended minimum; Prolific refuses studies under $8/h)",
        )

    def handle(self, *args, **opts):
        fair = _dollars(opts["fair_hourly"])
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}; load it first with `manage.py load_study FILE`")
        s = prolific.setup(study)
        out = self.stdout.write
        out(f"Study URL (paste into Prolific; keep the URL parameters):\n  {s.study_url}")
        out(f"Completion code (participants who finish):\n  {s.completion_code}")
        out(f"  their completion URL: {s.completion_url}")
        out(f"Screened-out code (participants whose audio/video check failed; add it as a second code):\n"
            f"  {s.screened_out_code}")
        out(f"Reward ${s.reward_usd} for about {s.estimated_minutes:g} minutes = ${s.hourly_usd} per hour")
        if s.hourly_usd < prolific.MINIMUM_HOURLY_USD:
            self.stderr.write(f"warning: ${s.hourly_usd}/h is under Prolific's enforced minimum of "
                              f"${prolific.MINIMUM_HOURLY_USD}/h; Prolific will not accept this study")
        if s.hourly_usd < fair:
            self.stderr.write(f"warning: ${s.hourly_usd}/h is under the fair minimum of ${fair}/h "
                              f"(Prolific recommends at least ${prolific.RECOMMENDED_HOURLY_USD}/h); raise "
                              "recruitment.reward_usd or check recruitment.estimated_minutes with a pilot")
        if study.status != Study.Status.LIVE:
            self.stderr.write(f"warning: the study is {study.status}; participants will be told it is not open "
                              "(open it with `manage.py load_study FILE --open` or the dashboard)")
        if not s.study_url.startswith("https://"):
            self.stderr.write("warning: the study URL is not HTTPS; set PUBLIC_BASE_URL to the site's public address")
