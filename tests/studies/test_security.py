"""Security of the site: collaborators' roles per study (pages, admin, the share_study command, the
migration that gave earlier collaborators a role), the Content-Security-Policy with no inline script on any
page, and rate limits on the participant endpoints (429 with Retry-After, nothing saved, per session and per
address, shared through Redis, failing open when the cache is down)."""
import re
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.urls import reverse

from studies import throttle
from studies.models import Participant, Response, StudyMember

from .test_trial_answer import to_first_trial


# ------------------------------------------------------------------------------------------------ roles
@pytest.fixture
def researcher(django_user_model):
    return django_user_model.objects.create_user("colleague", password="pw-colleague-123")


def _as(researcher, study, role):
    if role is not None:
        StudyMember.objects.update_or_create(study=study, user=researcher, defaults={"role": role})
    client = Client()
    client.force_login(researcher)
    return client


ACTIONS = {  # what each request needs; (method, url name, data)
    "view": [("get", "study_dashboard", None), ("get", "study_gallery", None)],
    "analyse": [("get", "study_export", None), ("post", "study_report_request", {"correction": "holm"})],
    "manage": [("post", "study_status", {"status": "closed"}), ("post", "study_render_retry", {})],
}
ROLES = [None, "viewer", "analyst", "manager"]
ALLOWED = {None: set(), "viewer": {"view"}, "analyst": {"view", "analyse"},
           "manager": {"view", "analyse", "manage"}}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_what_it_allows_and_is_told_what_it_lacks(role, researcher, demo_study, monkeypatch):
    from studies import reporting

    monkeypatch.setattr(reporting, "report_request", lambda **kw: None)  # the queueing itself is tested elsewhere
    client = _as(researcher, demo_study, role)
    for action, requests in ACTIONS.items():
        for method, name, data in requests:
            r = getattr(client, method)(reverse(name, args=[demo_study.slug]), data or {})
            if role is None:
                assert r.status_code == 404, (name, r.status_code)  # not even told the study exists
            elif action in ALLOWED[role]:
                assert r.status_code in (200, 302), (role, name, r.status_code)
            else:
                assert r.status_code == 403, (role, name, r.status_code)
                text = r.content.decode()
                assert f"Your role on {demo_study.slug} is {role}" in text and "share_study" in text
    demo_study.refresh_from_db()
    assert demo_study.status == ("closed" if role == "manager" else "live")


def test_the_dashboard_shows_only_the_controls_of_ones_role(researcher, demo_study):
    viewer = _as(researcher, demo_study, "viewer").get(reverse("study_dashboard", args=[demo_study.slug]))
    text = viewer.content.decode()
    assert "your role: viewer" in text and "mode=pilot" not in text
    assert reverse("study_export", args=[demo_study.slug]) not in text
    assert reverse("study_status", args=[demo_study.slug]) not in text
    manager = _as(researcher, demo_study, "manager")
    page = manager.get(reverse("study_dashboard", args=[demo_study.slug])).content.decode()
    assert "mode=pilot" in page and reverse("study_status", args=[demo_study.slug]) in page


def test_study_list_shows_owned_and_shared_studies_once(researcher, demo_study, django_user_model):
    client = _as(researcher, demo_study, None)
    assert list(client.get(reverse("study_list")).context["studies"]) == []
    demo_study.owner = researcher
    demo_study.save()
    other = django_user_model.objects.create_user("third")
    StudyMember.objects.create(study=demo_study, user=other, role="viewer")
    assert list(client.get(reverse("study_list")).context["studies"]) == [demo_study]


def test_share_study_command_gives_changes_lists_and_removes_roles(researcher, demo_study, capsys):
    call_command("share_study", demo_study.slug, "colleague", "--role", "analyst")
    assert StudyMember.objects.get(study=demo_study, user=researcher).role == "analyst"
    call_command("share_study", demo_study.slug, "colleague", "--role", "manager")
    assert StudyMember.objects.get(study=demo_study, user=researcher).role == "manager"
    capsys.readouterr()
    call_command("share_study", demo_study.slug)
    assert f"{demo_study.slug}: colleague (manager)" in capsys.readouterr().out
    call_command("share_study", demo_study.slug, "colleague", "--remove")
    assert not StudyMember.objects.filter(user=researcher).exists()
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("share_study", demo_study.slug, "nobody", "--role", "viewer")
    with pytest.raises(CommandError, match="either --role ROLE or --remove"):
        call_command("share_study", demo_study.slug, "colleague")
    demo_study.owner = researcher
    demo_study.save()
    with pytest.raises(CommandError, match="owns"):
        call_command("share_study", demo_study.slug, "colleague", "--role", "viewer")
    assert not StudyMember.objects.filter(user=researcher).exists()


def _staff(user):
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="studies"))
    return user


def test_admin_shows_a_collaborator_only_the_rows_their_role_allows(researcher, demo_study, driver):
    driver.start()
    driver.complete()
    client = _as(_staff(researcher), demo_study, None)

    def changelist(name):
        return client.get(reverse(f"admin:studies_{name}_changelist")).context["cl"].result_count
    assert changelist("study") == 0 and changelist("participant") == 0 and changelist("response") == 0
    StudyMember.objects.create(study=demo_study, user=researcher, role="viewer")
    assert changelist("study") == 1 and changelist("participant") == 0 and changelist("response") == 0
    StudyMember.objects.filter(user=researcher).update(role="analyst")
    assert changelist("participant") == 1
    assert changelist("response") == Response.objects.filter(trial__participant__study=demo_study).count() > 0
    # an analyst may not change the study (nor choose its collaborators)
    r = client.post(reverse("admin:studies_study_change", args=[demo_study.pk]), {"slug": "renamed"})
    assert r.status_code == 403
    demo_study.refresh_from_db()
    assert demo_study.slug != "renamed"


def test_admin_refuses_a_new_version_of_a_study_one_may_not_manage(researcher, demo_study):
    from studies.demo import demo_spec_text
    from studies.models import StudyVersion

    client = _as(_staff(researcher), demo_study, "analyst")
    edited = demo_spec_text(quick=True).replace("quota: 24", "quota: 40")
    before = StudyVersion.objects.filter(study=demo_study).count()
    r = client.post(reverse("admin:studies_studyversion_add"), {"spec_yaml": edited})
    assert r.status_code == 200 and "does not allow new versions" in r.content.decode()
    assert StudyVersion.objects.filter(study=demo_study).count() == before
    StudyMember.objects.filter(user=researcher).update(role="manager")
    r = client.post(reverse("admin:studies_studyversion_add"), {"spec_yaml": edited})
    assert r.status_code == 302
    assert StudyVersion.objects.filter(study=demo_study).count() == before + 1


@pytest.mark.pg_only
@pytest.mark.django_db(transaction=True)
def test_migration_makes_earlier_collaborators_managers(django_user_model):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("studies", "0005_robot_records")])
    old = executor.loader.project_state([("studies", "0005_robot_records")]).apps
    user = old.get_model("auth", "User").objects.create(username="earlier")
    study = old.get_model("studies", "Study").objects.create(slug="earlier", title="Earlier", public_token="p" * 20,
                                                               lab_token="l" * 20)
    study.collaborators.add(user)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    member = StudyMember.objects.get(study__slug="earlier", user__username="earlier")
    assert member.role == "manager"


# ------------------------------------------------------------------------------------------------ CSP
def _policy(response) -> dict:
    return dict(d.strip().split(" ", 1) for d in response["Content-Security-Policy"].split(";"))


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
INLINE_STYLE_ATTR = re.compile(r"<[^>]+\sstyle\s*=", re.I)


def test_every_page_has_a_strict_policy_and_no_inline_script(driver, admin_client, demo_study):
    from studies import selectors

    driver.start()
    pages = []
    for data in ({"agree": "yes"}, {}, None):  # consent, instructions, audio/video check
        pages.append(driver.page())
        if data is None:
            data = {"digits": selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]}
        driver.submit_page(data)
    pages.append(driver.page())  # the first trial
    pages.append(driver.complete())  # the completion page
    for name in ("study_dashboard", "study_gallery"):
        pages.append(admin_client.get(reverse(name, args=[demo_study.slug])))
    pages += [admin_client.get(reverse("study_list")), admin_client.get(reverse("model_list"))]
    assert any(b'id="trial"' in p.content for p in pages)
    for page in pages:
        assert page.status_code == 200
        policy = _policy(page)
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", policy
        assert policy["object-src"] == "'none'" and policy["default-src"] == "'self'"
        html = page.content.decode()
        assert not INLINE_SCRIPT.search(html), INLINE_SCRIPT.search(html).group(0)
        assert not INLINE_HANDLER.search(html), INLINE_HANDLER.search(html).group(0)
        assert not INLINE_STYLE_ATTR.search(html), INLINE_STYLE_ATTR.search(html).group(0)
    admin = admin_client.get(reverse("admin:index"))
    assert _policy(admin)["style-src"] == "'self' 'unsafe-inline'" and _policy(admin)["script-src"] == "'self'"


# ------------------------------------------------------------------------------------------- rate limits
@pytest.fixture
def limits(settings):
    caches["default"].clear()

    def set_limits(text):
        settings.PARTICIPANT_RATE_LIMITS = text
    yield set_limits
    caches["default"].clear()


def test_new_sessions_are_limited_per_address(limits, demo_study):
    limits("start=3/m")
    url = reverse("entry", args=[demo_study.public_token])
    for _ in range(3):
        assert Client(REMOTE_ADDR="10.0.0.1").get(url).status_code == 302
    r = Client(REMOTE_ADDR="10.0.0.1").get(url)
    assert r.status_code == 429 and 1 <= int(r["Retry-After"]) <= 60
    assert "Please wait" in r.content.decode() and "Traceback" not in r.content.decode()
    assert Participant.objects.filter(study=demo_study).count() == 3
    assert Client(REMOTE_ADDR="10.0.0.2").get(url).status_code == 302  # another address is not held back
    assert Participant.objects.filter(study=demo_study).count() == 4


@override_settings(RATE_LIMIT_CLIENT_IP_HEADER="HTTP_X_REAL_IP")
def test_behind_the_proxy_the_address_comes_from_its_header(limits, demo_study):
    limits("start=1/m")
    url = reverse("entry", args=[demo_study.public_token])
    assert Client(REMOTE_ADDR="172.18.0.5", HTTP_X_REAL_IP="198.51.100.7").get(url).status_code == 302
    assert Client(REMOTE_ADDR="172.18.0.5", HTTP_X_REAL_IP="198.51.100.7").get(url).status_code == 429
    assert Client(REMOTE_ADDR="172.18.0.5", HTTP_X_REAL_IP="198.51.100.8").get(url).status_code == 302


def test_answers_over_the_limit_are_refused_unsaved_and_accepted_in_the_next_window(limits, driver, monkeypatch):
    trial = to_first_trial(driver)
    driver.watch_all(trial)  # (no limits yet)
    other = type(driver)(Client(), driver.study)  # another participant on the same address
    other_trial = to_first_trial(other)
    other.watch_all(other_trial)
    limits("api=2/m")
    clock = [1_000_040.0]  # windows of 60 s start at multiples of 60: this one at 1_000_020
    monkeypatch.setattr(throttle.time, "time", lambda: clock[0])
    report = {"trial": trial.public_id, "slot": 0, "ended": True, "watched_fraction": 1.0, "seeks": 0,
              "pauses": 0, "replays": 0, "hidden_ms": 0, "playback_errors": 0}
    assert driver.post_json("watch", report).status_code == 200
    assert driver.post_json("watch", {}).status_code == 400  # a refused request counts too
    sid = str(uuid.uuid4())
    r = driver.answer(trial, submission_id=sid)
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert int(r["Retry-After"]) == 40  # its window ends at 1_000_080
    assert not Response.objects.filter(trial=trial).exists()
    assert other.answer(other_trial).status_code == 201  # their own budget
    clock[0] = 1_000_081.0
    assert driver.answer(trial, submission_id=sid).status_code == 201
    assert Response.objects.filter(trial=trial).count() == len(driver.answers_for(trial))


def test_a_cache_that_cannot_be_reached_lets_participants_through(limits, demo_study, settings, caplog):
    settings.CACHES = {**settings.CACHES, "down": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    settings.RATE_LIMIT_CACHE = "down"
    limits("start=1/m")
    url = reverse("entry", args=[demo_study.public_token])
    for _ in range(3):
        assert Client().get(url).status_code == 302
    assert "rate limits not applied" in caplog.text


def test_limits_are_shared_through_redis_between_processes(limits, demo_study, settings):
    """Two web workers share one Redis: the counter a request raised in one is seen by the other."""
    import redis

    db = 14
    settings.CACHES = {**settings.CACHES, "shared": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:6379/{db}"}}
    settings.RATE_LIMIT_CACHE = "shared"
    redis.Redis(port=6379, db=db).flushdb()
    limits("start=2/m")
    url = reverse("entry", args=[demo_study.public_token])
    assert Client().get(url).status_code == 302
    keys = redis.Redis(port=6379, db=db).keys("*ratelimit:start:*")
    assert len(keys) == 1  # the counter lives in Redis, where every worker counts
    assert 60 <= redis.Redis(port=6379, db=db).ttl(keys[0]) <= 65  # and expires after its window (+5 s)
    assert int(redis.Redis(port=6379, db=db).get(keys[0])) == 1
    assert Client().get(url).status_code == 302
    assert Client().get(url).status_code == 429
    redis.Redis(port=6379, db=db).flushdb()
    assert Client().get(url).status_code == 302


def test_bad_limit_settings_are_refused_naming_the_part():
    assert throttle.parse_limits("start=60/m, api=5/s") == {"start": (60, 60), "api": (5, 1)}
    for bad, part in (("starts=5/m", "starts=5/m"), ("api=five/m", "api=five/m"), ("api=5/d", "api=5/d")):
        with pytest.raises(ValueError, match=re.escape(part)):
            throttle.parse_limits(bad)
