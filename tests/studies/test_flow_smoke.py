"""One participant through the whole quick demo study over Django's test client: every page, every
question type, the attention check, the completion code; the responses land once each."""
from studies.models import Exclusion, Participant, Response, Trial


def test_a_participant_completes_the_demo_study(driver):
    r = driver.start()
    assert r.status_code == 302
    page = driver.page()
    assert page.status_code == 200 and b"Consent" in page.content
    final = driver.complete()
    p = driver.participant
    assert p.status == Participant.Status.COMPLETED
    assert p.completion_code and p.completion_code.encode() in final.content
    trials = Trial.objects.filter(participant=p)
    assert trials.filter(answered_at__isnull=True).count() == 0
    # likert: 2 items per trial; slider: 1 item x 3 rated videos (the open reference is not rated); pairwise: 1
    expected = 0
    for t in trials:
        q = p.version.spec["questions"][t.question]
        n_items = len(q["items"])
        expected += n_items * (t.slots.exclude(role="reference").count() if q["type"] == "slider" else 1)
    assert Response.objects.filter(participant=p).count() == expected
    assert not Exclusion.objects.filter(participant=p).exists()
