"""Mixed model checked against statsmodels MixedLM and simulated truth; Krippendorff's α checked against
the `krippendorff` package and the worked example of Krippendorff (2011)."""

import json
import warnings

import krippendorff
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from studies.analysis import robustness
from studies.analysis.errors import AnalysisError
from studies.analysis.robustness import krippendorff_alpha, mixed_model


def simulated_ratings(*, participants, conditions, utterances, effects, seed, participant_sd=0.7,
                      stimulus_sd=0.4, residual_sd=1.0, drop=0.0):
    """Every participant rates every stimulus (condition × utterance) once, minus a random `drop` share."""
    rng = np.random.default_rng(seed)
    person = rng.normal(0, participant_sd, participants)
    stimulus = rng.normal(0, stimulus_sd, (conditions, utterances))
    rows = []
    for p in range(participants):
        for c in range(conditions):
            for u in range(utterances):
                if rng.random() < drop:
                    continue
                value = 3.0 + effects[c] + person[p] + stimulus[c, u] + rng.normal(0, residual_sd)
                rows.append((f"p{p:03d}", f"c{c}", f"c{c}/u{u}", f"u{u}", value))
    return pd.DataFrame(rows, columns=["participant", "condition", "stimulus", "utterance", "value"])


def statsmodels_crossed(df):
    """The same model fitted by statsmodels: one group, variance components for both factors."""
    model = smf.mixedlm("value ~ C(condition)", df, groups=np.ones(len(df)), re_formula="0",
                        vc_formula={"participant": "0 + C(participant)", "stimulus": "0 + C(stimulus)"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = model.fit(reml=True)
    assert fitted.converged
    return fitted


def by_term(result):
    return {row["term"]: row for row in result["fixed"]}


# --- mixed model -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [3, 8])
def test_mixed_model_matches_statsmodels_crossed_mixedlm(seed):
    df = simulated_ratings(participants=14, conditions=3, utterances=4, effects=[0.0, 0.6, -0.4], seed=seed,
                           drop=0.15)
    ours, theirs = mixed_model(df), statsmodels_crossed(df)
    assert ours["converged"] and ours["n"] == len(df) and ours["note"] == ""
    rows = by_term(ours)
    names = list(theirs.fe_params.index)  # Intercept, C(condition)[T.c1], C(condition)[T.c2]
    assert list(rows) == names
    low, high = theirs.conf_int().loc[names].to_numpy().T
    for i, name in enumerate(names):
        assert rows[name]["estimate"] == pytest.approx(theirs.fe_params[name], abs=1e-4)
        # statsmodels takes SEs from its numerical Hessian of all parameters; ours are σ²(X'V⁻¹X)⁻¹
        assert rows[name]["se"] == pytest.approx(theirs.bse_fe[name], rel=2e-3)
        assert rows[name]["z"] == pytest.approx(theirs.tvalues[name], rel=3e-3)
        assert rows[name]["p"] == pytest.approx(theirs.pvalues[name], rel=2e-2, abs=1e-6)
        assert rows[name]["ci_low"] == pytest.approx(low[i], abs=2e-3)
        assert rows[name]["ci_high"] == pytest.approx(high[i], abs=2e-3)
    vc = dict(zip(theirs.model.exog_vc.names, theirs.vcomp))
    assert ours["variance"]["participant"] == pytest.approx(vc["participant"], rel=2e-3, abs=1e-4)
    assert ours["variance"]["stimulus"] == pytest.approx(vc["stimulus"], rel=2e-3, abs=1e-4)
    assert ours["variance"]["residual"] == pytest.approx(theirs.scale, rel=2e-3)
    json.dumps(ours)


def test_mixed_model_without_stimuli_matches_statsmodels_random_intercept():
    df = simulated_ratings(participants=20, conditions=4, utterances=3, effects=[0, 0.3, 0.5, -0.2], seed=4,
                           stimulus_sd=0.0, drop=0.1).drop(columns=["stimulus", "utterance"])
    ours = mixed_model(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = smf.mixedlm("value ~ C(condition)", df, groups=df["participant"]).fit(reml=True)
    assert ours["formula"] == "value ~ C(condition) + (1 | participant)"
    assert "no stimulus random intercept" in ours["note"]
    assert ours["variance"]["stimulus"] is None
    rows = by_term(ours)
    for name in theirs.fe_params.index:
        assert rows[name]["estimate"] == pytest.approx(theirs.fe_params[name], abs=1e-4)
        assert rows[name]["se"] == pytest.approx(theirs.bse_fe[name], rel=2e-3)
    assert ours["variance"]["participant"] == pytest.approx(theirs.cov_re.iloc[0, 0], rel=2e-3)
    assert ours["variance"]["residual"] == pytest.approx(theirs.scale, rel=2e-3)


def test_mixed_model_recovers_simulated_condition_effects():
    effects = [0.0, 0.8, -0.5, 0.3]
    df = simulated_ratings(participants=120, conditions=4, utterances=15, effects=effects, seed=21,
                           participant_sd=0.6, stimulus_sd=0.3, drop=0.3)
    result = mixed_model(df)
    rows = by_term(result)
    assert result["converged"]
    assert rows["Intercept"]["estimate"] == pytest.approx(3.0, abs=0.35)
    for c in (1, 2, 3):
        row = rows[f"C(condition)[T.c{c}]"]
        assert row["estimate"] == pytest.approx(effects[c], abs=0.3)
        assert row["ci_low"] < effects[c] < row["ci_high"]
    assert rows["C(condition)[T.c1]"]["p"] < 1e-4
    assert result["variance"]["participant"] == pytest.approx(0.36, rel=0.4)
    assert result["variance"]["residual"] == pytest.approx(1.0, rel=0.05)


def test_mixed_model_stimulus_from_condition_and_utterance():
    df = simulated_ratings(participants=10, conditions=2, utterances=5, effects=[0, 0.5], seed=1)
    with_stimulus = mixed_model(df)
    without = mixed_model(df.drop(columns=["stimulus"]))
    assert "condition × utterance" in without["note"]
    assert without["fixed"] == with_stimulus["fixed"]


def test_mixed_model_degenerate_data_give_notes_not_errors():
    df = simulated_ratings(participants=15, conditions=1, utterances=8, effects=[0.0], seed=2)
    one_condition, theirs = mixed_model(df), statsmodels_crossed(df)
    assert "Only one condition" in one_condition["note"]
    assert [row["term"] for row in one_condition["fixed"]] == ["Intercept"]
    assert one_condition["fixed"][0]["estimate"] == pytest.approx(theirs.fe_params.iloc[0], abs=1e-4)
    assert one_condition["variance"]["stimulus"] == pytest.approx(theirs.vcomp[1], rel=2e-3)

    equal = mixed_model(df.assign(value=4.0))
    assert "All ratings are equal" in equal["note"] and equal["fixed"] == []
    assert equal["variance"]["residual"] is None

    tiny = mixed_model(df.head(2))
    assert "Too few ratings" in tiny["note"]

    one_stimulus_each = simulated_ratings(participants=10, conditions=3, utterances=1, effects=[0, 1, 2],
                                          seed=3)
    confounded = mixed_model(one_stimulus_each)
    assert "cannot be told apart" in confounded["note"] and confounded["variance"]["stimulus"] is None
    assert confounded["converged"]

    assert "No ratings" in mixed_model(df.head(0))["note"]

    missing = df.assign(value=df["value"].where(np.arange(len(df)) % 7 != 0))
    assert "without a value left out" in mixed_model(missing)["note"]


def test_mixed_model_that_does_not_converge_reports_it(monkeypatch):
    monkeypatch.setattr(robustness, "_MAX_ITER", 1)
    df = simulated_ratings(participants=12, conditions=3, utterances=4, effects=[0, 0.5, 1.0], seed=6)
    result = mixed_model(df)
    assert result["converged"] is False
    assert "before converging" in result["note"]
    assert len(result["fixed"]) == 3 and all(np.isfinite(row["estimate"]) for row in result["fixed"])


def test_mixed_model_bad_input_raises_analysis_error():
    with pytest.raises(AnalysisError, match="value"):
        mixed_model(pd.DataFrame({"participant": ["p"], "condition": ["a"]}))
    with pytest.raises(AnalysisError, match="not numbers"):
        mixed_model(pd.DataFrame({"participant": ["p"], "condition": ["a"], "value": ["high"]}))


# --- Krippendorff's alpha -----------------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C (nominal data, any number of
# observers, missing data): 4 observers × 12 units, "." = missing. The paper reports α = 0.743 (nominal),
# and for the same data α = 0.815 (ordinal) and α = 0.849 (interval).
KRIPPENDORFF_2011 = """
A  1 2 3 3 2 1 4 1 2 . . .
B  1 2 3 3 2 2 4 1 2 5 . 3
C  . 3 3 3 2 3 4 2 2 5 1 .
D  1 2 3 3 2 4 4 1 2 5 1 .
"""


def tidy_from_matrix(matrix, *, coders=None):
    """Reliability matrix (coders × units, NaN = missing) -> tidy rows."""
    matrix = np.asarray(matrix, dtype=float)
    coders = coders or [f"r{i}" for i in range(matrix.shape[0])]
    i, u = np.nonzero(~np.isnan(matrix))
    return pd.DataFrame({"participant": np.array(coders)[i], "condition": "c", "stimulus": [f"u{x}" for x in u],
                         "value": matrix[i, u]})


def paper_matrix():
    lines = [line.split()[1:] for line in KRIPPENDORFF_2011.strip().splitlines()]
    return np.array([[np.nan if v == "." else float(v) for v in line] for line in lines])


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_reproduces_the_worked_example(level, published):
    matrix = paper_matrix()
    alpha = krippendorff_alpha(tidy_from_matrix(matrix), level=level)
    assert round(alpha, 3) == published
    assert alpha == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level),
                                  abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_alpha_matches_the_package_on_random_data(seed, level):
    rng = np.random.default_rng(seed)
    coders, units = 12, 40
    truth = rng.integers(1, 6, units)
    matrix = np.clip(truth + rng.integers(-1, 2, (coders, units)) * (rng.random((coders, units)) < 0.5), 1, 5)
    matrix = matrix.astype(float)
    matrix[rng.random((coders, units)) < 0.35] = np.nan
    matrix[:, 0] = np.nan
    matrix[3, 0] = 2.0  # a unit with one value: not pairable
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)
    assert krippendorff_alpha(tidy_from_matrix(matrix), level=level) == pytest.approx(expected, abs=1e-10)


def test_krippendorff_alpha_interval_on_continuous_slider_values():
    rng = np.random.default_rng(7)
    matrix = rng.normal(50, 10, 30)[None, :] + rng.normal(0, 8, (25, 30))
    matrix[rng.random(matrix.shape) < 0.4] = np.nan
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="interval")
    assert krippendorff_alpha(tidy_from_matrix(matrix), level="interval") == pytest.approx(expected, abs=1e-10)


def test_krippendorff_alpha_units_duplicates_and_undefined_cases():
    matrix = paper_matrix()
    df = tidy_from_matrix(matrix)
    # no stimulus column: unit = condition × utterance
    by_utterance = df.rename(columns={"stimulus": "utterance"})
    assert krippendorff_alpha(by_utterance, level="interval") == pytest.approx(0.849, abs=5e-4)
    # a coder who rated a unit twice contributes the mean (interval)
    twice = pd.concat([df, pd.DataFrame({"participant": ["r0", "r0"], "condition": "c", "stimulus": ["u0", "u0"],
                                         "value": [3.0, 5.0]})])
    averaged = matrix.copy()
    averaged[0, 0] = (1.0 + 3.0 + 5.0) / 3
    assert krippendorff_alpha(twice, level="interval") == pytest.approx(
        krippendorff.alpha(reliability_data=averaged, level_of_measurement="interval"), abs=1e-12)
    # undefined: every unit rated by one coder only, or no variation at all
    assert krippendorff_alpha(df[df["participant"] == "r1"], level="nominal") is None
    assert krippendorff_alpha(df.assign(value=3.0), level="interval") is None
    with pytest.raises(AnalysisError, match="level"):
        krippendorff_alpha(df, level="ratio-ish")
    with pytest.raises(AnalysisError, match="stimulus"):
        krippendorff_alpha(df.drop(columns=["stimulus"]), level="nominal")
