"""Researcher pages: login required, per-study visibility, the dashboard's figures, preview without
polluting the data, CSV download, opening and closing a study."""
from django.urls import reverse

from studies.models import Participant


def test_pages_need_login(client, demo_study):
    for url in (reverse("study_list"), reverse("study_dashboard", args=[demo_study.slug]),
                reverse("study_export", args=[demo_study.slug])):
        r = client.get(url)
        assert r.status_code == 302 and "/admin/login/" in r["Location"]


def test_a_researcher_sees_only_their_own_or_shared_studies(client, demo_study, django_user_model):
    other = django_user_model.objects.create_user("other", password="pw-other-123")
    client.force_login(other)
    assert client.get(reverse("study_dashboard", args=[demo_study.slug])).status_code == 404
    demo_study.collaborators.add(other)
    assert client.get(reverse("study_dashboard", args=[demo_study.slug])).status_code == 200


def test_dashboard_counts_completions_exclusions_time_and_pay(driver, admin_client, demo_study):
    driver.start()
    driver.complete()
    second = type(driver)(type(driver.client)(), demo_study)
    second.start()
    second.complete(attention_value=5)
    r = admin_client.get(reverse("study_dashboard", args=[demo_study.slug]))
    ctx = r.context
    assert ctx["valid_completions"] == 1 and ctx["excluded_participants"] == 1
    assert dict(ctx["exclusions"]) == {"attention_check": 1}
    rows = {(row["condition"], row["embodiment"]): row for row in ctx["per_condition"]}
    assert set(rows) == {("ground_truth", "avatar"), ("random_alignment", "avatar"), ("still", "avatar")}
    # quick demo: 3 likert trials (one per condition) + 3 slider trials (all 3) + 3 pairs (2 each) per person
    assert rows[("ground_truth", "avatar")]["valid"] == 1 + 3 + 2
    assert rows[("ground_truth", "avatar")]["all"] == 2 * (1 + 3 + 2)
    minutes = sorted((p.completed_at - p.started_at).total_seconds() / 60 for p in Participant.objects.filter(study=demo_study))
    assert abs(ctx["median_minutes"] - (minutes[0] + minutes[1]) / 2) < 1e-9
    assert abs(ctx["hourly_usd"] - 2.0 / (ctx["median_minutes"] / 60)) < 1e-9
    assert b"Placeholder clips" in r.content
    assert ctx["source_counts"] == {"direct": 2}


def test_preview_runs_as_a_participant_but_counts_nowhere(admin_client, demo_study):
    r = admin_client.post(reverse("study_preview", args=[demo_study.slug]))
    assert r.status_code == 302 and r["Location"] == reverse("take", args=[demo_study.public_token])
    assert admin_client.get(r["Location"]).status_code == 200
    p = Participant.objects.get(study=demo_study)
    assert p.source == "preview"
    ctx = admin_client.get(reverse("study_dashboard", args=[demo_study.slug])).context
    assert ctx["started"] == 0 and ctx["pilot_sessions"] == 1


def test_the_dashboard_counts_pilot_and_bot_sessions_only_when_asked(driver, admin_client, demo_study):
    from django.test import Client

    from studies import services

    driver.start()
    driver.complete()  # a participant
    pilot = type(driver)(Client(), demo_study)
    pilot.start(f"?mode=pilot&key={services.pilot_key(demo_study)}")
    pilot.complete()
    url = reverse("study_dashboard", args=[demo_study.slug])
    plain = admin_client.get(url)
    assert plain.context["started"] == 1 and plain.context["pilot_sessions"] == 1
    assert b"?sessions=all" in plain.content  # the way to count them too
    every = admin_client.get(url + "?sessions=all").context
    assert every["started"] == 2 and every["include_pilot"] and every["completed_without_exclusion"] == 2
    assert every["source_counts"] == {"direct": 1, "pilot": 1}
    rows = {(row["condition"], row["embodiment"]): row for row in every["per_condition"]}
    assert rows[("ground_truth", "avatar")]["valid"] == 2 * (1 + 3 + 2)
    assert every["valid_completions"] == 1  # the quota still counts the participant alone


def test_close_and_reopen(admin_client, demo_study):
    admin_client.post(reverse("study_status", args=[demo_study.slug]), {"status": "closed"})
    demo_study.refresh_from_db()
    assert demo_study.status == "closed"
    admin_client.post(reverse("study_status", args=[demo_study.slug]), {"status": "live"})
    demo_study.refresh_from_db()
    assert demo_study.status == "live"


def test_admin_lists_every_model(admin_client, demo_study):
    for name in ("corpus", "utterance", "condition", "stimulus", "study", "studyversion", "participant",
                 "trial", "response", "exclusion"):
        assert admin_client.get(reverse(f"admin:studies_{name}_changelist")).status_code == 200, name


def test_health(client, db):
    assert client.get("/healthz").json() == {"ok": True}


def test_health_answers_the_containers_probe_by_address_over_http(client, db, settings):
    """compose's probe asks http://127.0.0.1:8000/healthz: not an allowed host, not HTTPS. Every other page
    still refuses the host and redirects to HTTPS."""
    settings.ALLOWED_HOSTS = ["study.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    probe = client.get("/healthz", HTTP_HOST="127.0.0.1:8000")
    assert probe.status_code == 200 and probe.json() == {"ok": True}
    assert client.get("/r/", HTTP_HOST="127.0.0.1:8000").status_code == 400
    assert client.get("/r/", HTTP_HOST="study.example.org").status_code == 301


def test_editing_the_yaml_in_the_admin_makes_a_validated_new_version(admin_client, demo_study):
    from studies.demo import demo_spec_text
    from studies.models import StudyVersion

    url = reverse("admin:studies_studyversion_add")
    edited = demo_spec_text(quick=True).replace("quota: 24", "quota: 40")
    r = admin_client.post(url, {"spec_yaml": edited})
    assert r.status_code == 302
    latest = StudyVersion.objects.filter(study=demo_study).order_by("-number").first()
    assert latest.number == 2 and latest.spec["recruitment"]["quota"] == 40
    r = admin_client.post(url, {"spec_yaml": edited.replace("points: 7", "points: 70")}, follow=True)
    assert b"out of range" in r.content
    assert StudyVersion.objects.filter(study=demo_study).count() == 2


def test_the_gallery_opens_on_a_rated_utterance_and_lists_check_clips_last(client, demo_study, django_user_model):
    """Not on the alphabetically first clip (an attention or A/V check): a new user sees the conditions."""
    import re

    client.force_login(django_user_model.objects.create_superuser("gal", "g@example.org", "x"))
    page = client.get(reverse("study_gallery", args=[demo_study.slug])).content.decode()
    options = re.findall(r'<option value="([^"]+)"( selected)?', page)
    names = [name for name, _ in options]
    assert [name for name, selected in options if selected] == ["utt01"]
    assert names.index("utt03") < names.index("attention1") and names.index("utt03") < names.index("avcheck")
