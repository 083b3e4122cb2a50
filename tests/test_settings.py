"""Settings come from the environment; production settings pass `check --deploy` with no warnings and
refuse to start without a secret key."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "EVALSITE_ENV", "DEBUG")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_production_settings_pass_check_deploy_without_warnings():
    r = run_manage("check", "--deploy", "--fail-level", "WARNING", env_extra={
        "EVALSITE_ENV": "production", "SECRET_KEY": "p" * 20 + "Q9!x" * 10, "ALLOWED_HOSTS": "study.example.org",
        "DATABASE_URL": "sqlite:////tmp/deploy-check.sqlite3",
    })
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues" in r.stdout


def test_production_refuses_to_start_without_a_secret_key():
    r = run_manage("check", env_extra={"EVALSITE_ENV": "production", "ALLOWED_HOSTS": "study.example.org"})
    assert r.returncode != 0 and "SECRET_KEY must be set" in r.stderr


def test_database_and_broker_urls_are_read_from_the_environment():
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='evalsite.settings'; django.setup();"
            "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'],"
            " s.CELERY_BROKER_URL, s.MEDIA_ROOT, s.ALLOWED_HOSTS)")
    env = dict(os.environ, DATABASE_URL="postgres://u@db.example:5432/studies", CELERY_BROKER_URL="redis://r:6379/2",
               MEDIA_ROOT="/srv/media", ALLOWED_HOSTS="a.example,b.example")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["django.db.backends.postgresql", "studies", "redis://r:6379/2", "/srv/media",
                                "['a.example',", "'b.example']"], r.stderr


def test_prepared_statements_are_on_for_postgresql_unless_turned_off():
    """PostgreSQL connections get a prepare threshold (studies/rawsql.py's statements are prepared) unless
    DB_PREPARED_STATEMENTS=0, for a connection pooler that cannot keep them; SQLite has no such option."""
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='evalsite.settings'; django.setup();"
            "from django.conf import settings as s; print(s.DATABASES['default'].get('OPTIONS', {}).get('prepare_threshold'))")
    for url, flag, expected in (("postgres://u@db.example:5432/studies", None, "5"),
                                ("postgres://u@db.example:5432/studies", "0", "None"),
                                ("sqlite:////tmp/x.sqlite3", None, "None")):
        env = {k: v for k, v in os.environ.items() if k != "DB_PREPARED_STATEMENTS"}
        env.update({"DATABASE_URL": url, **({"DB_PREPARED_STATEMENTS": flag} if flag else {})})
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.stdout.strip() == expected, (url, flag, r.stdout, r.stderr)


def test_an_empty_participant_id_key_falls_back_to_the_secret_key():
    """Worker ids are never hashed with an empty key, whatever an env file leaves blank."""
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='evalsite.settings'; django.setup();"
            "from django.conf import settings as s; print(s.PARTICIPANT_ID_HMAC_KEY == s.SECRET_KEY == 'k' * 50)")
    for key in ("", "own-key"):
        env = dict(os.environ, SECRET_KEY="k" * 50, PARTICIPANT_ID_HMAC_KEY=key)
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.stdout.strip() == ("True" if key == "" else "False"), r.stderr


def test_the_default_broker_is_embedded_and_needs_no_server():
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='evalsite.settings'; django.setup();"
            "from evalsite.celery import app; print(app.conf.broker_url, app.conf.task_acks_late,"
            " app.conf.task_reject_on_worker_lost, sorted(q.name for q in app.conf.task_queues))")
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["filesystem://", "True", "True", "['hardware',", "'inference',", "'render']"], r.stderr


def test_a_real_worker_answers_over_the_embedded_broker(tmp_path):
    """The single-machine default: no broker server, a worker process and a client share var/broker."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(EVALSITE_VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "evalsite", "worker", "-Q", "render", "--pool", "solo",
                               "--loglevel", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='evalsite.settings'; django.setup();"
                "from studies.tasks import render_ping; print(render_ping.delay(41).get(timeout=60))")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert r.stdout.strip() == "42", r.stderr[-2000:]
    finally:
        worker.terminate()
        worker.wait(timeout=20)
