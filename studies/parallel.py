"""Django work spread over processes on this machine: a batch of render jobs (`render_study --jobs N`) and
the demo's model training, in fresh interpreters that share this process's settings.

Each process is spawned (no OpenGL context, database connection or torch thread pool is copied from the
caller), sets Django up on the caller's settings, database and media folders (in tests, temporary ones),
and gets its share of the cores for its numeric libraries (torch, BLAS, llvmpipe), so N processes on N
cores do not fight over threads. The Celery workers are the other way to spread work (over machines); both
run the same functions (`rendering.render_job_run`, the `train` command), so a job is done once whichever
takes it. Nothing of Django is imported at the top: a process unpickles this module's functions before
Django is set up.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studies.models import RenderJob

MAX_DEFAULT_PROCESSES = 4
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS")


class ProcessDied(RuntimeError):
    """A worker process stopped without reporting (killed, out of memory, or failed to start)."""


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def default_processes() -> int:
    """One process per core, at most MAX_DEFAULT_PROCESSES."""
    return max(1, min(cores(), MAX_DEFAULT_PROCESSES))


def process_pool(processes: int) -> ProcessPoolExecutor:
    """`processes` spawned Django processes sharing this one's database and folders, each with
    cores // processes threads for its numeric libraries."""
    from django.conf import settings
    from django.db import connection

    shared = {"db_name": str(connection.settings_dict["NAME"]), "MEDIA_ROOT": str(settings.MEDIA_ROOT),
              "VAR_DIR": str(settings.VAR_DIR), "threads": max(1, cores() // processes)}
    return ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn"), initializer=_process_start,
                               initargs=(shared,))


def _process_start(shared: dict) -> None:
    for name in THREAD_VARIABLES:  # read by the libraries when they start, so before any of them is imported
        os.environ[name] = str(shared["threads"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    settings.MEDIA_ROOT, settings.VAR_DIR = shared["MEDIA_ROOT"], Path(shared["VAR_DIR"])
    connections["default"].settings_dict["NAME"] = shared["db_name"]


def others_can_share_the_database() -> bool:
    """Whether processes started now would see what this one sees: not inside a transaction (its writes are
    not committed yet) and not on an in-memory SQLite database (another process cannot open it)."""
    from django.db import connection

    if connection.in_atomic_block:
        return False
    return not (connection.vendor == "sqlite" and connection.is_in_memory_db())


def died() -> ProcessDied:
    return ProcessDied("a worker process stopped unexpectedly (its error is above, or it was killed or ran out "
                       "of memory); what was finished is kept — run the command again to do the rest")


# --- render jobs ---------------------------------------------------------------------------------------


def render_here(jobs: list[RenderJob], *, processes: int) -> list[RenderJob]:
    """Render `jobs` on this machine with a progress bar, in `processes` processes (each keeps one renderer
    for all the stimuli it makes); returns those that failed (each job records why). When other processes
    could not see the jobs (others_can_share_the_database), they are rendered in this process."""
    from tqdm import tqdm

    failed = []
    bar = tqdm(total=len(jobs), desc="rendering", unit="stimulus", disable=None)
    try:
        if processes == 1 or len(jobs) < 2 or not others_can_share_the_database():
            for job in jobs:
                if not _render_one(job.pk)[1]:
                    failed.append(job)
                bar.update()
            return failed
        by_id = {job.pk: job for job in jobs}
        with process_pool(min(processes, len(jobs))) as pool:
            try:
                for future in as_completed([pool.submit(_render_one, pk) for pk in by_id]):
                    pk, ok = future.result()
                    if not ok:
                        failed.append(by_id[pk])
                    bar.update()
            except BrokenProcessPool:
                raise died() from None
        return failed
    finally:
        bar.close()


def _render_one(job_id: int) -> tuple[int, bool]:
    """Render one job; a failure is recorded on the job (render_job_run does), so only success is returned."""
    from studies import rendering

    try:
        rendering.render_job_run(job_id=job_id)
        return job_id, True
    except Exception:  # recorded on the job with its reason; reported together by the command
        return job_id, False


# --- commands ------------------------------------------------------------------------------------------


def run_commands(commands: list[tuple[str, list, dict]], *, after: dict[int, int], processes: int) -> None:
    """Run management commands (name, positional arguments, options) in `processes` processes; `after` maps a command's index to
    the index of one it must wait for. The first failure stops the rest (those running finish) and is
    raised here with its message. When other processes could not see this one's data, they run here, in
    order."""
    from django.core.management import CommandError, call_command

    if processes == 1 or not others_can_share_the_database():
        done: set[int] = set()
        while len(done) < len(commands):
            ready = [i for i in range(len(commands)) if i not in done and after.get(i, -1) in done | {-1}]
            if not ready:
                raise ValueError(f"the commands wait for each other in a circle: {after}")
            name, args, options = commands[ready[0]]
            call_command(name, *args, **options)
            done.add(ready[0])
        return
    done, running, failure = set(), {}, None
    waiting = list(range(len(commands)))
    with process_pool(processes) as pool:
        try:
            while waiting or running:
                for i in [i for i in waiting if after.get(i) is None or after[i] in done]:
                    if failure is None and len(running) < processes:
                        waiting.remove(i)
                        running[pool.submit(_command, *commands[i])] = i
                if not running:
                    break
                future = next(as_completed(running))
                i = running.pop(future)
                error = future.result()
                if error is not None and failure is None:
                    failure = error
                    waiting.clear()
                done.add(i)
        except BrokenProcessPool:
            raise died() from None
    if failure is not None:
        raise CommandError(failure)


def _command(name: str, args: list, options: dict) -> str | None:
    """Run one management command; its error message, or None."""
    from django.core.management import CommandError, call_command

    try:
        call_command(name, *args, **options)
        return None
    except CommandError as exc:  # handed to the caller, which stops the batch and reports it
        return f"{name}: {exc}"
    except Exception as exc:
        return f"{name}: {type(exc).__name__}: {exc}"
