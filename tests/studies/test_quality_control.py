"""Quality control at completion: attention checks, minimum watch, speeding and straight-lining each
produce a stored exclusion with its reason; data are kept; an honest session is not excluded."""
from studies.models import Exclusion, Response, WatchRecord


def rules(participant):
    return set(Exclusion.objects.filter(participant=participant).values_list("rule", flat=True))


def test_honest_participant_is_not_excluded(driver):
    driver.start()
    driver.complete()
    assert rules(driver.participant) == set()


def test_failed_attention_check_is_excluded_with_reason_and_data_kept(driver):
    driver.start()
    driver.complete(attention_value=6)
    p = driver.participant
    assert "attention_check" in rules(p)
    reason = Exclusion.objects.get(participant=p, rule="attention_check").reason
    assert "failed 1 attention check" in reason
    assert Response.objects.filter(participant=p).exists()


def test_straight_lining_is_excluded(driver):
    driver.start()
    driver.complete(value=4, attention_value=1)
    assert "straight_lining" in rules(driver.participant)


def test_speeding_is_excluded(driver, monkeypatch):
    original = driver.answer
    monkeypatch.setattr(driver, "answer", lambda trial, answers=None, answer_ms=2500, submission_id=None:
                        original(trial, answers, answer_ms=150, submission_id=submission_id))
    driver.start()
    driver.complete()
    p = driver.participant
    assert "speed" in rules(p)
    assert "150 ms" in Exclusion.objects.get(participant=p, rule="speed").reason


def test_partial_watching_is_excluded(driver, monkeypatch):
    from studies import services

    real = services.watch_record

    def half_watched(**kwargs):
        kwargs["report"] = dict(kwargs["report"], watched_fraction=0.5)
        return real(**kwargs)

    monkeypatch.setattr(services, "watch_record", half_watched)
    driver.start()
    driver.complete()
    p = driver.participant
    assert "min_watch" in rules(p)
    assert WatchRecord.objects.filter(trial_stimulus__trial__participant=p, watched_fraction=0.5).exists()
