"""Prolific: the study URL and the codes a researcher pastes into Prolific's study form, and the hourly
pay a reward works out to. The basic flow needs no API calls: Prolific appends the participant's ids to
the study URL, and sends participants back with a completion code in the return URL.

Pay thresholds are Prolific's own ("Prolific's payment principles", researcher help centre,
https://researcher-help.prolific.com/hc/en-gb/articles/4407695146002-Prolific-s-payment-principles):
Prolific *recommends* at least £9.00 / $12.00 an hour and *enforces* at least £6.00 / $8.00 an hour.
Prolific judges the hourly rate by the median completion time, so set `recruitment.estimated_minutes`
from a pilot.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ..models import Study
from . import participant_entry_url

# Prolific fills these placeholders in with the participant's ids when it sends them to the study.
URL_PARAMETERS = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
COMPLETION_URL = "https://app.prolific.com/submissions/complete?cc={code}"
RECOMMENDED_HOURLY_USD = Decimal("12.00")  # Prolific's recommended minimum (see the module docstring)
MINIMUM_HOURLY_USD = Decimal("8.00")  # below this Prolific does not accept the study


def study_url(study: Study) -> str:
    """The URL to paste into Prolific ("What is the URL of your study?")."""
    return f"{participant_entry_url(study)}?{URL_PARAMETERS}"


def completion_url(code: str) -> str:
    """Where a participant goes at the end, to tell Prolific which code they finished with."""
    return COMPLETION_URL.format(code=code)


def fair_pay(reward_usd: Decimal | float | str, minutes: Decimal | float | int) -> Decimal:
    """The hourly rate a reward for `minutes` of work comes to, in dollars to the cent."""
    minutes = Decimal(str(minutes))
    if minutes <= 0:
        raise ValueError("the estimated time must be more than 0 minutes")
    hourly = Decimal(str(reward_usd)) * 60 / minutes
    return hourly.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ProlificSetup:
    """Everything the researcher enters in Prolific for one study."""

    study_url: str
    completion_code: str
    completion_url: str
    screened_out_code: str
    screened_out_url: str
    reward_usd: Decimal
    estimated_minutes: float
    hourly_usd: Decimal


def setup(study: Study) -> ProlificSetup:
    """Read the study's current version: URL, codes (completed, screened out) and the hourly pay."""
    recruitment = study.current_version.spec["recruitment"]
    reward = Decimal(str(recruitment["reward_usd"])).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return ProlificSetup(
        study_url=study_url(study),
        completion_code=study.completion_code,
        completion_url=completion_url(study.completion_code),
        screened_out_code=study.screened_out_code,
        screened_out_url=completion_url(study.screened_out_code),
        reward_usd=reward,
        estimated_minutes=recruitment["estimated_minutes"],
        hourly_usd=fair_pay(reward, recruitment["estimated_minutes"]),
    )
