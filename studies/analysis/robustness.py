"""Robustness checks beside the rank tests: a linear mixed model of the ratings, and inter-rater reliability.

`mixed_model` fits value ~ C(condition) + (1 | participant) + (1 | stimulus): condition as fixed effect
(treatment coding against the first condition in sorted order), with crossed random intercepts for
participants and stimuli, by restricted maximum likelihood (REML). This is the model statsmodels fits as
`MixedLM(endog, exog, groups=<one group for all rows>, exog_vc={"participant": ..., "stimulus": ...})`
(single group, two variance components) and lme4 as `lmer(value ~ condition + (1|participant) +
(1|stimulus))`. statsmodels itself is far too slow for a report at this size (measured here: 1.4 s per
likelihood evaluation and 215 s for the whole fit at 100,000 ratings × 500 participants × 200 stimuli;
24 s already at 10,000 ratings), and a subsample small enough to be quick (≈ 2,000 ratings) estimates the
variances badly. So the same REML criterion is computed here the way lme4 does (Bates, Mächler, Bolker &
Walker 2015, "Fitting Linear Mixed-Effects Models Using lme4", J. Stat. Softw. 67(1), sec. 3), from
cross-products of the data only: the random-effect block of the larger factor is diagonal and is
eliminated in closed form, leaving a dense system the size of the smaller factor plus the fixed effects
(200 + 10 here), so one evaluation costs milliseconds and the whole fit about half a second on all rows.
The two relative standard deviations θ = (σ_participant/σ, σ_stimulus/σ) are found with L-BFGS-B
(θ ≥ 0); the residual variance and fixed effects are profiled out. Fixed-effect standard errors are
σ̂² (X'V⁻¹X)⁻¹, with Wald z-tests and normal 95 % intervals, as statsmodels reports them. The tests check
estimates, standard errors and variances against statsmodels MixedLM on small data sets.

`krippendorff_alpha` computes Krippendorff's α (Krippendorff 2011, "Computing Krippendorff's
Alpha-Reliability", Annenberg School for Communication, University of Pennsylvania) with units = stimuli
and coders = participants, from the coincidence matrix o_ck = Σ_u (n_uc n_uk − [c = k] n_uc) / (m_u − 1)
of the pairable values (units with at least two values): α = 1 − (n − 1) Σ o_ck δ²_ck / Σ n_c n_k δ²_ck.
For all three levels δ² is a squared difference of a score per value (nominal: one-hot, interval: the
value, ordinal: the value's mid-rank position Σ_{g<c} n_g + n_c/2), so both sums are quadratic forms in the
unit × value count matrix; the k × k coincidence matrix is never built and thousands of distinct slider
values cost no more than five Likert points.
"""

import contextlib

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse, stats

from studies.analysis.errors import AnalysisError

try:  # limits BLAS threads; a transitive dependency (scikit-learn, via librosa), so optional here
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - runs single- or multi-threaded as BLAS decides
    threadpool_limits = None

MIXED_FORMULA = "value ~ C(condition) + (1 | participant) + (1 | stimulus)"
MIXED_METHOD = (
    "Linear mixed model with crossed random intercepts for participants and stimuli, fitted by REML on all "
    "ratings (the statsmodels MixedLM single-group variance-components model, computed with lme4's "
    "profiled criterion, Bates et al. 2015); fixed effects: Wald z-tests and 95 % intervals."
)
ALPHA_LEVELS = ("nominal", "ordinal", "interval")

_MAX_ITER = 200  # L-BFGS-B iterations over θ; a fit that needs more is reported as not converged
_CI_LEVEL = 0.95


def mixed_model(df):
    """Mixed model of the ratings; see the module docstring for the model and how it is fitted.

    Returns {"formula", "method", "n" (ratings used), "converged" (bool), "fixed": [{"term", "estimate",
    "se", "z", "p", "ci_low", "ci_high"}] ("Intercept" = the first condition's mean, then
    "C(condition)[T.<name>]" = difference from it), "variance": {"participant", "stimulus", "residual"},
    "note"}. Never raises for degenerate data: a random factor with fewer than two levels, or stimuli that
    are the same as conditions, is left out of the model (variance None); too few ratings, equal ratings,
    or a failed fit give None numbers; a fit that stops before converging keeps its numbers with
    converged False. The note says which.
    """
    frame, notes = _rating_frame(df)
    result = {"formula": MIXED_FORMULA, "method": MIXED_METHOD, "n": int(len(frame)), "converged": False,
              "fixed": [], "variance": {"participant": None, "stimulus": None, "residual": None}, "note": ""}
    if frame.empty:
        result["note"] = " ".join(notes + ["No ratings to model."])
        return result
    conditions, condition = np.unique(frame["condition"].to_numpy(dtype=str), return_inverse=True)
    terms, term_notes = _random_terms(frame, condition, len(conditions))
    notes += term_notes
    result["formula"] = "value ~ C(condition)" + "".join(f" + (1 | {name})" for name, _, _ in terms)
    if len(conditions) == 1:
        notes.append(f"Only one condition ({conditions[0]}): the model has an intercept and no condition "
                     "effects.")
    y = frame["value"].to_numpy(dtype=float)
    n_fixed = len(conditions)
    if len(y) <= n_fixed + len(terms) + 1:
        notes.append(f"Too few ratings ({len(y)}) to fit {n_fixed} fixed effect(s) and "
                     f"{len(terms) + 1} variance(s).")
        result["note"] = " ".join(notes)
        return result
    if np.ptp(y) == 0:
        notes.append("All ratings are equal, so there is no variation to model.")
        result["note"] = " ".join(notes)
        return result
    try:
        with _one_blas_thread():
            fitted = _CrossedREML(y, condition, n_fixed, terms).fit()
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as error:
        notes.append(f"The mixed model could not be fitted ({error}).")
        result["note"] = " ".join(notes)
        return result
    result["converged"] = fitted["converged"]
    if not fitted["converged"]:
        notes.append(f"The REML optimiser stopped before converging ({fitted['message']}); the numbers are "
                     "from where it stopped and may be unreliable.")
    names = ["Intercept"] + [f"C(condition)[T.{c}]" for c in conditions[1:]]
    z_crit = stats.norm.ppf(0.5 + _CI_LEVEL / 2)
    for name, estimate, se in zip(names, fitted["beta"], fitted["se"]):
        z = estimate / se if se > 0 else np.nan
        result["fixed"].append({
            "term": name, "estimate": float(estimate), "se": float(se), "z": _float(z),
            "p": _float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else None,
            "ci_low": float(estimate - z_crit * se), "ci_high": float(estimate + z_crit * se)})
    result["variance"]["residual"] = float(fitted["residual"])
    for name, variance in fitted["variances"].items():
        result["variance"][name] = float(variance)
    result["note"] = " ".join(notes)
    return result


def krippendorff_alpha(df, *, level):
    """Krippendorff's α of the ratings: units = stimuli, coders = participants.

    The unit is the `stimulus` column when every row names one, otherwise condition × `utterance`.
    A participant who rated a unit more than once contributes one value to it: the mean (interval), the
    lower median (ordinal) or the most frequent value, the smallest on ties (nominal). Returns None when
    α is undefined: fewer than two pairable values (no unit rated by two participants), or no variation
    among the pairable values (expected disagreement 0).
    """
    if level not in ALPHA_LEVELS:
        raise AnalysisError(f"unknown level of measurement {level!r}: use one of {', '.join(ALPHA_LEVELS)}")
    frame, _ = _rating_frame(df)
    units = _unit_labels(frame)
    values = pd.DataFrame({"unit": units, "coder": frame["participant"].astype(str).to_numpy(),
                           "value": frame["value"].to_numpy(dtype=float)})
    values = _one_value_per_coder(values, level)
    if values.empty:
        return None
    unit = pd.factorize(values["unit"])[0]
    domain, value = np.unique(values["value"].to_numpy(), return_inverse=True)
    counts = sparse.csr_matrix((np.ones(len(unit)), (unit, value)), shape=(unit.max() + 1, len(domain)))
    per_unit = np.asarray(counts.sum(1)).ravel()
    counts = counts[per_unit >= 2]  # only pairable values enter α
    per_unit = per_unit[per_unit >= 2]
    n = per_unit.sum()
    if n < 2:
        return None
    n_value = np.asarray(counts.sum(0)).ravel()  # n_c: pairable values of each kind
    weight = 1.0 / (per_unit - 1)
    if level == "nominal":
        # Σ_{c≠k} o_ck = n − trace(o); Σ_{c≠k} n_c n_k = n² − Σ n_c²
        trace = (weight * (np.asarray(counts.multiply(counts).sum(1)).ravel() - per_unit)).sum()
        observed, expected = n - trace, n * n - (n_value ** 2).sum()
    else:
        score = domain if level == "interval" else np.cumsum(n_value) - n_value / 2.0
        score = score - (n_value @ score) / n  # centring leaves the differences, improves rounding
        # Σ_ck o_ck (x_c − x_k)² = 2 Σ_c n_c x_c² − 2 x'ox, with x'ox = Σ_u w_u ((N_u x)² − N_u x²)
        sum_x, sum_x2 = counts @ score, counts @ (score ** 2)
        observed = 2 * (n_value @ score ** 2) - 2 * (weight * (sum_x ** 2 - sum_x2)).sum()
        expected = 2 * n * (n_value @ score ** 2) - 2 * (n_value @ score) ** 2
    if expected <= 0:
        return None
    return float(1.0 - (n - 1) * observed / expected)


# --- shared input handling -------------------------------------------------------------------------------

def _rating_frame(df):
    """The rows with a value; a note counts the rows left out for a missing value."""
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError("the data must be a table (pandas DataFrame) with one row per rating")
    missing = [c for c in ("participant", "condition", "value") if c not in df.columns]
    if missing:
        raise AnalysisError(f"the ratings need the column(s) {', '.join(missing)} (one row per rating with "
                            "participant, condition and value)")
    value = pd.to_numeric(df["value"], errors="coerce")
    bad = value.isna() & df["value"].notna()
    if bad.any():
        shown = ", ".join(repr(v) for v in df["value"][bad].astype(str).unique()[:5])
        raise AnalysisError(f"{int(bad.sum())} rating value(s) are not numbers (e.g. {shown}); fix or "
                            "remove them")
    keep = value.notna().to_numpy()
    frame = df.loc[keep].assign(value=value[keep].astype(float))
    notes = []
    if not keep.all():
        notes.append(f"{int((~keep).sum())} rating(s) without a value left out.")
    return frame, notes


def _filled(frame, column):
    """The column as stripped strings, or None when it is absent or any row leaves it empty."""
    if column not in frame.columns:
        return None
    text = frame[column].astype("string").str.strip()
    if text.isna().any() or text.eq("").any():
        return None
    return text.to_numpy(dtype=str)


def _stimulus_labels(frame):
    """(labels, how): the stimulus column, or condition × utterance when there is none; (None, "")
    when neither names the stimulus of every row."""
    stimulus = _filled(frame, "stimulus")
    if stimulus is not None:
        return stimulus, "stimulus"
    utterance = _filled(frame, "utterance")
    if utterance is not None:
        condition = frame["condition"].astype(str).to_numpy(dtype=str)
        return np.char.add(np.char.add(condition, "\x1f"), utterance), "condition × utterance"
    return None, ""


def _unit_labels(frame):
    labels, _ = _stimulus_labels(frame)
    if labels is None:
        raise AnalysisError("Krippendorff's alpha needs to know which stimulus each rating is about: give a "
                            "stimulus column (or an utterance column) with a value in every row")
    return labels


def _one_value_per_coder(values, level):
    """One value per (unit, coder): mean (interval), lower median (ordinal), mode (nominal)."""
    if not values.duplicated(["unit", "coder"]).any():
        return values
    grouped = values.groupby(["unit", "coder"], sort=False)["value"]
    if level == "interval":
        return grouped.mean().reset_index()
    if level == "ordinal":
        return grouped.quantile(0.5, interpolation="lower").reset_index()
    counted = values.groupby(["unit", "coder", "value"], sort=False).size().rename("times").reset_index()
    counted = counted.sort_values(["unit", "coder", "times", "value"], ascending=[True, True, False, True])
    return counted.drop_duplicates(["unit", "coder"])[["unit", "coder", "value"]]


def _float(x):
    return float(x) if np.isfinite(x) else None


# --- mixed model -------------------------------------------------------------------------------------------

def _random_terms(frame, condition, n_conditions):
    """[(name, codes, n_levels)] of the random intercepts the data can identify, and notes on the others."""
    notes, terms = [], []
    participant, n_participants = _codes(frame["participant"].astype(str).to_numpy(dtype=str))
    if n_participants >= 2:
        terms.append(("participant", participant, n_participants))
    else:
        notes.append("Only one participant: no participant variance.")
    labels, how = _stimulus_labels(frame)
    if labels is None:
        notes.append("No stimulus column (nor utterance) names every rating's stimulus, so the model has no "
                     "stimulus random intercept.")
        return terms, notes
    if how != "stimulus":
        notes.append("Stimulus = condition × utterance (no stimulus column).")
    stimulus, n_stimuli = _codes(labels)
    one_per_condition = n_stimuli == n_conditions and np.unique(stimulus * n_conditions + condition).size \
        == n_stimuli
    if n_stimuli < 2:
        notes.append("Only one stimulus: no stimulus variance.")
    elif one_per_condition:
        notes.append("Each condition has a single stimulus, so stimulus and condition effects cannot be told "
                     "apart: no stimulus variance.")
    else:
        terms.append(("stimulus", stimulus, n_stimuli))
    return terms, notes


def _codes(labels):
    levels, codes = np.unique(labels, return_inverse=True)
    return codes, len(levels)


class _CrossedREML:
    """Profiled REML criterion of y = Xβ + Σ_t Z_t b_t + ε, b_t ~ N(0, σ²θ_t² I), ε ~ N(0, σ² I), for up to
    two random-intercept factors (Bates et al. 2015, eqs. 16–43, with Λ = diag(θ_t)).

    With u = Λ⁻¹b the penalised least-squares system is M [u; β] = [ΛZ'y; X'y],
    M = [[ΛZ'ZΛ + I, ΛZ'X], [X'ZΛ, X'X]], and −2 REML log-likelihood
    = log|ΛZ'ZΛ + I| + log|R_X|² + (n − p)(1 + log(2π r²/(n − p))), r² = y'y − [u; β]'[ΛZ'y; X'y].
    The block of the factor with more levels is diagonal (one intercept per row), so it is eliminated
    first; the rest (smaller factor + fixed effects) is a dense Cholesky factorisation whose log-determinant
    is log|S| + log|R_X|² at once.
    """

    def __init__(self, y, condition, n_conditions, terms):
        self.n, self.p = len(y), n_conditions
        terms = sorted(terms, key=lambda t: -t[2])  # larger factor first: it is eliminated in closed form
        self.names = [name for name, _, _ in terms]
        by_condition = np.bincount(condition, minlength=n_conditions).astype(float)
        # Treatment coding: X = [1, dummies of conditions 2..p]. Cross-products from condition counts.
        self.xtx = np.diag(np.r_[0.0, by_condition[1:]])
        self.xtx[0, :] = self.xtx[:, 0] = np.r_[self.n, by_condition[1:]]
        sums = np.bincount(condition, weights=y, minlength=n_conditions)
        self.xty = np.r_[y.sum(), sums[1:]]
        self.yty = float(y @ y)
        self.factors = []
        for _, codes, levels in terms:
            counts = np.bincount(codes * n_conditions + condition,
                                 minlength=levels * n_conditions).reshape(levels, n_conditions)
            ztx = np.column_stack([counts.sum(1), counts[:, 1:]]).astype(float)
            self.factors.append({"codes": codes, "levels": levels, "ztz": counts.sum(1).astype(float),
                                 "ztx": ztx, "zty": np.bincount(codes, weights=y, minlength=levels)})
        if len(terms) == 2:
            big, small = terms
            self.cross = np.bincount(big[1] * small[2] + small[1],
                                     minlength=big[2] * small[2]).reshape(big[2], small[2]).astype(float)

    def _solve(self, theta):
        """(r², log|ΛZ'ZΛ + I| + log|R_X|², Cholesky factor of the reduced system, its solution)."""
        p, factors = self.p, self.factors
        if len(factors) == 2:
            small = factors[1]
            t1, t2 = theta
            q = small["levels"]
            reduced = np.zeros((q + p, q + p))
            reduced[:q, :q] = np.diag(t2 * t2 * small["ztz"] + 1.0)
            reduced[:q, q:] = t2 * small["ztx"]
            reduced[q:, :q] = reduced[:q, q:].T
            reduced[q:, q:] = self.xtx
            rhs = np.r_[t2 * small["zty"], self.xty]
            coupling = np.hstack([t1 * t2 * self.cross, t1 * factors[0]["ztx"]])
        else:
            reduced, rhs = self.xtx.copy(), self.xty.copy()
            coupling = t1 = None
            if factors:
                (t1,) = theta
                coupling = t1 * factors[0]["ztx"]
        logdet, r2 = 0.0, self.yty
        if factors:
            big = factors[0]
            diagonal = t1 * t1 * big["ztz"] + 1.0
            big_rhs = t1 * big["zty"]
            scaled = coupling / diagonal[:, None]
            reduced = reduced - coupling.T @ scaled
            rhs = rhs - scaled.T @ big_rhs
            logdet += np.log(diagonal).sum()
            r2 -= big_rhs @ (big_rhs / diagonal)
        factor = linalg.cho_factor(reduced, lower=True, check_finite=False)
        solution = linalg.cho_solve(factor, rhs, check_finite=False)
        logdet += 2.0 * np.log(np.diag(factor[0])).sum()
        r2 -= rhs @ solution
        return r2, logdet, factor, solution

    def deviance(self, theta):
        """−2 × REML log-likelihood, profiled over β and σ²."""
        r2, logdet, _, _ = self._solve(theta)
        dof = self.n - self.p
        if not r2 > 0:
            return np.inf
        return logdet + dof * (1.0 + np.log(2.0 * np.pi * r2 / dof))

    def fit(self):
        k = len(self.factors)
        converged, message = True, ""
        theta = np.ones(k)
        if k:
            bounds = [(0.0, None)] * k
            found = optimize.minimize(self.deviance, theta, method="L-BFGS-B", bounds=bounds,
                                      options={"maxiter": _MAX_ITER})
            if not np.isfinite(found.fun):
                raise ValueError("the likelihood is not finite at any variance tried")
            # L-BFGS-B's finite-difference gradient can stop it early where the criterion is flat (few
            # participants, say): a derivative-free polish from there, as lme4 finishes with Nelder–Mead/BOBYQA,
            # and the better of the two is kept.
            polished = optimize.minimize(self.deviance, found.x, method="Nelder-Mead", bounds=bounds,
                                         options={"maxiter": _MAX_ITER, "xatol": 1e-7, "fatol": 1e-10})
            best = polished if np.isfinite(polished.fun) and polished.fun < found.fun else found
            theta, converged, message = best.x, bool(found.success or polished.success), str(best.message)
        r2, _, factor, solution = self._solve(theta)
        sigma2 = r2 / (self.n - self.p)
        p = self.p
        tail = np.zeros((len(solution), p))
        tail[-p:] = np.eye(p)
        covariance = sigma2 * linalg.cho_solve(factor, tail, check_finite=False)[-p:]
        return {"beta": solution[-p:], "se": np.sqrt(np.clip(np.diag(covariance), 0, None)),
                "residual": sigma2, "converged": converged, "message": message,
                "variances": {name: sigma2 * t * t for name, t in zip(self.names, theta)}}


def _one_blas_thread():
    """The matrices here are small (hundreds of rows), where BLAS threads only get in each other's way: on a
    busy two-core machine the mixed model took 21 s with OpenBLAS's default threads and 0.5 s with one."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
