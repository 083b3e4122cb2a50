"""`manage.py render_study FILE_OR_SLUG` — make every stimulus a study needs that does not exist yet.

Takes the study YAML (before `load_study`, which refuses a study whose stimuli are missing) or the slug of
a loaded study. Renders here with a progress bar — in `--jobs N` processes, each with its own renderer
(default: one per core, at most 4) — or with `--background` queues one Celery task per stimulus on the
`render` queue for the workers (the study's dashboard shows progress). A failed render is reported with its
reason; `--retry-failed` tries the failed ones again. Cells on the physical robot are not rendered: they are
counted as "to capture" with `manage.py capture` on the machine the robot is plugged into.
"""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies import capturing, rendering
from studies.models import RenderJob, Study
from studies.parallel import MAX_DEFAULT_PROCESSES, ProcessDied, default_processes, render_here
from studies.spec import SpecError, parse_spec


class Command(BaseCommand):
    help = "Render the stimuli of a study (YAML file or slug) that do not exist yet; reports failures and retries."

    def add_arguments(self, parser):
        parser.add_argument("study", help="the study YAML file, or the slug of a loaded study")
        parser.add_argument("--background", action="store_true", help="queue on the render workers and return")
        parser.add_argument("--retry-failed", action="store_true", help="render failed stimuli again")
        parser.add_argument("--uploads", help="folder of uploaded conditions' videos: DIR/<condition>/<utterance>.mp4")
        parser.add_argument("--reencode", action="store_true",
                            help="re-encode uploaded videos that fail the format rules (else they are refused)")
        parser.add_argument("--jobs", type=int, default=default_processes(), metavar="N",
                            help="render in N processes on this machine, each with its own renderer (default: one "
                                 f"per core, at most {MAX_DEFAULT_PROCESSES}: {default_processes()} here)")

    def handle(self, *args, **opts):
        if opts["jobs"] < 1:
            raise CommandError(f"--jobs must be at least 1 (got {opts['jobs']})")
        spec = study_spec(opts["study"], self.stderr)
        try:
            jobs = rendering.render_jobs_plan(spec, retry_failed=opts["retry_failed"],
                                              uploads=opts["uploads"], reencode=opts["reencode"])
            to_capture = capturing.captures_pending(spec)
        except rendering.RenderRequestError as exc:
            raise CommandError(str(exc)) from None
        # Jobs left "rendering" by a run that was stopped count as to do: here they are taken again (on
        # PostgreSQL a job a worker renders right now is waited for, then found done: rendering.job_lock);
        # with --background the queue's own redelivery takes them.
        todo = [j for j in jobs if j.status in (RenderJob.Status.QUEUED, RenderJob.Status.RENDERING)]
        failed_before = [j for j in jobs if j.status == RenderJob.Status.FAILED]
        capture_note = (f", {to_capture} to capture with `manage.py capture {spec['slug']} --robot DEVICE "
                        "--camera DEVICE`" if to_capture else "")
        self.stdout.write(f"{spec['slug']}: {len(jobs)} stimuli, {len(jobs) - len(todo) - len(failed_before)} made, "
                          f"{len(todo)} to render, {len(failed_before)} failed before{capture_note}")
        if opts["background"]:
            from studies.tasks import render_stimulus

            queued = [j for j in todo if j.status == RenderJob.Status.QUEUED]
            for job in queued:
                result = render_stimulus.delay(job.pk)
                RenderJob.objects.filter(pk=job.pk).update(task_id=result.id)
            self.stdout.write(f"queued {len(queued)} render tasks; the study's dashboard shows progress")
            return
        try:
            failures = render_here(todo, processes=opts["jobs"])
        except ProcessDied as exc:
            raise CommandError(str(exc)) from None
        failures += failed_before
        for job in failures:
            job.refresh_from_db()
            self.stderr.write(f"  failed: {job.utterance.name} / {job.condition.name} / {job.embodiment}: {job.error}")
        if failures:
            raise CommandError(f"{len(failures)} stimuli could not be rendered (reasons above); fix them and run "
                               "again with --retry-failed")
        if to_capture:
            self.stdout.write(f"{spec['slug']}: every rendered stimulus is ready; {to_capture} robot_physical "
                              f"stimuli are still to capture with `manage.py capture {spec['slug']} --robot DEVICE "
                              "--camera DEVICE`")
        else:
            self.stdout.write(f"{spec['slug']}: every stimulus is ready; load the study with `manage.py load_study`")


def study_spec(ref: str, stderr) -> dict:
    """The spec of a study YAML file or of a loaded study's slug; problems in a file are written to `stderr`
    one per line, then refused with a CommandError (also used by `manage.py capture`)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            return rendering.freeze_variants(parse_spec(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise CommandError(f"cannot read {ref}: {exc}") from None
        except rendering.RenderRequestError as exc:
            raise CommandError(f"{ref}: {exc}; nothing was made") from None
        except SpecError as exc:
            for problem in exc.problems:
                stderr.write(f"{ref}: {problem}")
            raise CommandError(f"{len(exc.problems)} problem(s) in {ref}; nothing was made") from None
    study = Study.objects.filter(slug=ref).first()
    if study is None or study.current_version is None:
        raise CommandError(f"no study file or loaded study called {ref!r}")
    return study.current_version.spec
