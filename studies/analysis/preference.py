"""Preference scores for pairwise (A/B) studies: win rates, Bradley–Terry strengths, and the lip-sync
sanity check (does the matched animation beat a mismatched one?).

Each row of the tidy frame is one choice: `participant`, `pair_a`, `pair_b` (condition names of the two
sides) and `choice` ("A", "B" or "tie"; A = pair_a). A row whose two sides are the same condition carries no
preference; such rows are left out and counted in the result's note.

- `win_rates` / `win_matrix`: wins, losses and ties per condition; a tie counts half a win to each side.
- `bradley_terry`: the Bradley–Terry model P(i beats j) = γ_i / (γ_i + γ_j), fitted by maximum likelihood
  with the MM algorithm of Hunter (2004), "MM algorithms for generalized Bradley–Terry models", Annals of
  Statistics 32(1), 384–406 (eq. 3), each MM step followed by a safeguarded Newton step so the fit also
  converges fast when strengths are far apart. Ties count half a win to each side. Scores are
  log-strengths log γ_i, centred to mean 0 (geometric mean of the strengths = 1), with
  percentile-bootstrap intervals that resample participants with replacement and refit. The bootstrap is
  vectorised: per-participant win counts [P, k, k] are computed once, a round's counts are their sum
  weighted by how often each participant was drawn (one matrix product per block of rounds), and all
  rounds of a block are fitted together (2,000 rounds × 10 conditions × 500 participants: ~0.3 s).
- `matched_vs_mismatched`: exact two-sided binomial test of the matched condition's share of wins against
  0.5 (ties left out), with the Clopper–Pearson (1934) interval.
"""

import contextlib

import numpy as np
import pandas as pd
from scipy import stats
from scipy.sparse.csgraph import connected_components

from studies.analysis.errors import AnalysisError

try:  # limits BLAS threads; a transitive dependency (scikit-learn, via librosa), so optional here
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - runs single- or multi-threaded as BLAS decides
    threadpool_limits = None

BT_METHOD = (
    "Bradley–Terry strengths fitted by maximum likelihood (Hunter's 2004 MM algorithm with Newton steps to "
    "finish); a tie counts as "
    "half a win for each side. Scores are log-strengths centred to mean 0 (0 = an average condition; a "
    "difference d between two scores means odds of exp(d) : 1 that the first is preferred). Intervals: "
    "percentile bootstrap resampling participants with replacement and refitting."
)
BINOMIAL_METHOD = (
    "Exact two-sided binomial test of the matched condition's share of wins against 0.5 (ties left out), "
    "with the Clopper–Pearson exact interval."
)

# Pseudo-count used only when the maximum-likelihood scores do not exist (see `bradley_terry`): each pair of
# conditions compared in the data gets this many extra virtual ties (half a win to each side per tie).
VIRTUAL_TIES = 1.0
_TOL = 1e-10  # stop when no log-strength moves by more than this in one iteration
_MAX_ITER = 10_000
_BOOT_CHUNK = 1000  # bootstrap rounds fitted together; bounds memory at ~ chunk × conditions² floats

_CHOICE_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}  # share of the trial won by side A (case ignored)


def win_rates(df):
    """Wins, losses and ties per condition, with ties split.

    Returns a DataFrame with one row per condition that appears on either side of a trial, sorted by
    `win_rate` (highest first, then by name): `condition`, `wins`, `losses`, `ties` (trial counts, ints),
    `n` (= wins + losses + ties, the condition's trials) and `win_rate` = (wins + ties / 2) / n.
    `result.attrs["note"]` says which rows were left out ("" when none).
    """
    trials = _trials(df)
    conditions, a, b, score = trials["conditions"], trials["a"], trials["b"], trials["score"]
    k = len(conditions)
    a_won, b_won, tied = score == 1.0, score == 0.0, score == 0.5
    wins = np.bincount(a[a_won], minlength=k) + np.bincount(b[b_won], minlength=k)
    losses = np.bincount(b[a_won], minlength=k) + np.bincount(a[b_won], minlength=k)
    ties = np.bincount(a[tied], minlength=k) + np.bincount(b[tied], minlength=k)
    n = wins + losses + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, (wins + 0.5 * ties) / np.maximum(n, 1), np.nan)
    table = pd.DataFrame({"condition": conditions, "wins": wins.astype(np.int64),
                          "losses": losses.astype(np.int64), "ties": ties.astype(np.int64),
                          "n": n.astype(np.int64), "win_rate": rate})
    table = table.sort_values(["win_rate", "condition"], ascending=[False, True], na_position="last")
    table = table.reset_index(drop=True)
    table.attrs["note"] = trials["note"]
    return table


def win_matrix(df):
    """Share of the trials between row condition and column condition that the row won (ties = half).

    Square DataFrame indexed and columned by condition name (sorted); NaN on the diagonal and where two
    conditions were never compared. `result.attrs["n_trials"]` holds the trial counts as
    {row: {column: int}}, `result.attrs["note"]` as in `win_rates`.
    """
    trials = _trials(df)
    conditions = trials["conditions"]
    wins = _win_counts(trials["a"], trials["b"], trials["score"], len(conditions))
    played = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(played > 0, wins / np.where(played > 0, played, 1), np.nan)
    matrix = pd.DataFrame(share, index=pd.Index(conditions, name="condition"), columns=list(conditions))
    matrix.attrs["n_trials"] = {r: {c: int(played[i, j]) for j, c in enumerate(conditions)}
                                for i, r in enumerate(conditions)}
    matrix.attrs["note"] = trials["note"]
    return matrix


def bradley_terry(df, *, n_boot=2000, seed=0, level=0.95):
    """Bradley–Terry log-strength per condition with a participant-bootstrap percentile interval.

    Returns a DataFrame sorted by score (highest first): `condition`, `score` (log γ, centred so the mean
    score is 0, i.e. the geometric mean of the strengths is 1), `ci_low`, `ci_high` (percentile interval at
    `level` over `n_boot` rounds that resample participants with replacement and refit; NaN when
    n_boot = 0). `result.attrs` carries `note` (why a number is missing or how to read it; "" when
    nothing to say), `method` (`BT_METHOD`) and `groups` (lists of conditions that were compared with each
    other, directly or through others).

    Degenerate data do not raise:

    - Disconnected comparisons (some conditions never compared, even indirectly, with the others): scores
      are fitted and centred separately within each group and cannot be compared across groups; the note
      names the groups. A condition only ever compared with itself gets NaN.
    - No maximum-likelihood solution: when a condition never won (or never lost), or more generally a set
      of conditions never won against the rest of its group, the likelihood keeps increasing as its score
      goes to −∞ (Ford 1957; Hunter 2004, Assumption 1). Then, and only then, every pair of conditions
      compared in the data gets `VIRTUAL_TIES` = 1 extra virtual tie (half a win to each side), which makes
      all scores finite and shrinks them slightly towards 0; the note says so. Bootstrap rounds apply the
      same rule to their own resampled data, and the note counts how many needed it.
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise AnalysisError(f"n_boot must be a whole number ≥ 0 (got {n_boot!r})")
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise AnalysisError(f"level must be between 0 and 1, e.g. 0.95 (got {level!r})")
    trials = _trials(df)
    conditions, k = trials["conditions"], len(trials["conditions"])
    notes = [trials["note"]] if trials["note"] else []
    if k == 0:
        table = pd.DataFrame({"condition": pd.Series(dtype=object), "score": pd.Series(dtype=float),
                              "ci_low": pd.Series(dtype=float), "ci_high": pd.Series(dtype=float)})
        table.attrs.update({"note": " ".join(notes + ["No trials to fit."]), "method": BT_METHOD,
                            "groups": []})
        return table

    wins = _win_counts(trials["a"], trials["b"], trials["score"], k)
    compared = (wins + wins.T) > 0
    n_groups, labels = connected_components(compared, directed=False)
    group_size = np.bincount(labels, minlength=n_groups)
    fitted = group_size[labels] >= 2  # conditions with at least one real comparison
    groups = [[conditions[i] for i in np.flatnonzero(labels == g)] for g in range(n_groups)]
    real_groups = [g for g in groups if len(g) >= 2]
    if len(real_groups) > 1:
        shown = "; ".join("{" + ", ".join(g) + "}" for g in real_groups)
        notes.append(f"The conditions fall into {len(real_groups)} groups never compared with each other "
                     f"({shown}); scores are centred within each group and cannot be compared across groups.")
    lonely = [conditions[i] for i in np.flatnonzero(~fitted)]
    if lonely:
        notes.append(f"No trial compared {', '.join(lonely)} with another condition, so no score.")

    fit = _BradleyTerryFit(labels, fitted, compared)
    with _one_blas_thread():
        score, regularised = fit(wins[None])
    score, regularised = score[0], bool(regularised[0])
    if regularised:
        never_won = [conditions[i] for i in np.flatnonzero(fitted & (wins.sum(1) == 0))]
        never_lost = [conditions[i] for i in np.flatnonzero(fitted & (wins.sum(0) == 0))]
        detail = "; ".join(part for part in (
            f"never won: {', '.join(never_won)}" if never_won else "",
            f"never lost: {', '.join(never_lost)}" if never_lost else "") if part)
        notes.append(
            "The plain maximum-likelihood scores do not exist because some conditions never won (or never "
            f"lost) against the rest{' (' + detail + ')' if detail else ''}; each compared pair got "
            f"{VIRTUAL_TIES:g} virtual tie so every score is finite (scores are shrunk slightly towards 0). "
            "Read an extreme score as 'lost (or won) every comparison'.")

    ci_low = ci_high = np.full(k, np.nan)
    if n_boot > 0:
        with _one_blas_thread():
            ci_low, ci_high, n_regularised = _bootstrap(trials, fit, n_boot=n_boot, seed=seed, level=level)
        if n_regularised and not regularised:
            notes.append(f"{n_regularised} of {n_boot} bootstrap rounds had no maximum-likelihood solution "
                         "(a resampled condition never won or never lost) and were fitted with the same "
                         "virtual-tie rule.")
    table = pd.DataFrame({"condition": conditions, "score": score, "ci_low": ci_low, "ci_high": ci_high})
    table = table.sort_values(["score", "condition"], ascending=[False, True], na_position="last")
    table = table.reset_index(drop=True)
    table.attrs.update({"note": " ".join(notes), "method": BT_METHOD, "groups": real_groups})
    return table


def matched_vs_mismatched(df, *, matched, mismatched):
    """How often the matched (correct lip-sync) condition beats mismatched ones, with an exact binomial test.

    Uses the trials that pair `matched` with any condition in `mismatched` (either side); ties are left
    out of both the count and the test (the note gives their number). Two-sided exact binomial test of
    the matched share against 0.5, with `scipy.stats.binomtest` semantics (p = sum of the probabilities of
    all outcomes no more likely than the one observed), and the Clopper–Pearson 95 % interval.
    Returns {"n" (trials without ties), "matched_wins", "share", "p", "ci_low", "ci_high", "note"}; with no
    usable trial the numbers are None and the note says why.
    """
    if isinstance(mismatched, str):
        mismatched = [mismatched]
    mismatched = [str(m) for m in mismatched]
    matched = str(matched)
    if not mismatched:
        raise AnalysisError("name at least one mismatched condition to compare the matched condition with")
    if matched in mismatched:
        raise AnalysisError(f"condition {matched!r} is given both as matched and as mismatched; "
                            "a condition can only be one of them")
    trials = _trials(df)
    conditions = np.asarray(trials["conditions"], dtype=object)
    side_a, side_b, score = conditions[trials["a"]], conditions[trials["b"]], trials["score"]
    others = set(mismatched)
    a_matched = (side_a == matched) & np.isin(side_b, list(others))
    b_matched = (side_b == matched) & np.isin(side_a, list(others))
    matched_share = np.concatenate([score[a_matched], 1.0 - score[b_matched]])
    n_ties = int(np.count_nonzero(matched_share == 0.5))
    decided = matched_share[matched_share != 0.5]
    n, won = int(decided.size), int(np.count_nonzero(decided == 1.0))
    notes = [f"{n_ties} tied trial{'s' if n_ties != 1 else ''} left out."] if n_ties else []
    if n == 0:
        present = set(trials["conditions"])
        missing = [c for c in [matched, *mismatched] if c not in present]
        why = (f"condition(s) {', '.join(missing)} do not appear in the data" if missing
               else "no trial without a tie pairs them")
        notes.insert(0, f"No test of {matched} against {', '.join(mismatched)}: {why}.")
        return {"n": 0, "matched_wins": 0, "share": None, "p": None, "ci_low": None, "ci_high": None,
                "note": " ".join(notes)}
    low, high = _clopper_pearson(won, n, level=0.95)
    return {"n": n, "matched_wins": won, "share": won / n, "p": _binomial_two_sided_p(won, n),
            "ci_low": low, "ci_high": high, "note": " ".join(notes)}


# --- trials -------------------------------------------------------------------------------------------

def _trials(df):
    """Validate the pairwise columns and code the trials: condition indices, side A's share of the win."""
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError("the data must be a table (pandas DataFrame) with one row per choice")
    missing = [c for c in ("participant", "pair_a", "pair_b", "choice") if c not in df.columns]
    if missing:
        raise AnalysisError(f"pairwise preference needs the column(s) {', '.join(missing)}; each row is one "
                            "choice with participant, pair_a, pair_b (the two conditions) and choice "
                            "(A, B or tie)")
    # Clean the few distinct labels, not every row: factorise first (100,000 rows: 0.6 s -> 0.05 s).
    choice_code, choice_labels = pd.factorize(df["choice"])
    label_score = np.array([_CHOICE_SCORE.get(str(v).strip().lower(), np.nan) for v in choice_labels] + [np.nan])
    score = label_score[choice_code]  # code −1 (missing) picks the trailing NaN
    bad = np.isnan(score)
    if bad.any():
        shown = sorted({str(v) for v in df["choice"][bad].tolist()})[:5]
        raise AnalysisError(f"{int(bad.sum())} row(s) have a choice that is not A, B or tie (e.g. "
                            f"{', '.join(repr(v) for v in shown)}); fix or remove them")
    side_code, side_labels = pd.factorize(pd.concat([df["pair_a"], df["pair_b"]], ignore_index=True))
    names = np.array([str(v).strip() for v in side_labels] + [""], dtype=object)
    unnamed = (names[side_code] == "").reshape(2, -1).any(0)
    if unnamed.any():
        raise AnalysisError(f"{int(unnamed.sum())} row(s) lack a condition name in pair_a or pair_b; "
                            "every choice needs the conditions of both sides")
    conditions, name_code = np.unique(names[:-1].astype(str), return_inverse=True)
    a, b = name_code[side_code].reshape(2, -1)
    itself = a == b
    note = ""
    if itself.any():
        n_self = int(itself.sum())
        note = (f"{n_self} trial{'s' if n_self != 1 else ''} compared a condition with itself and "
                f"{'were' if n_self != 1 else 'was'} left out.")
    keep = ~itself
    person, participants = pd.factorize(df["participant"].astype(str).to_numpy()[keep], sort=True)
    return {"conditions": [str(c) for c in conditions], "a": a[keep], "b": b[keep], "score": score[keep],
            "participant": person, "n_participants": len(participants), "note": note}


def _win_counts(a, b, score, k, weights=None):
    """wins[i, j]: how many trials i won against j (ties half each), optionally weighted per trial."""
    w = np.ones(len(a)) if weights is None else weights
    flat = np.bincount(a * k + b, weights=w * score, minlength=k * k)
    flat += np.bincount(b * k + a, weights=w * (1.0 - score), minlength=k * k)
    return flat.reshape(k, k)


# --- Bradley–Terry fit -----------------------------------------------------------------------------------

class _BradleyTerryFit:
    """Fits many win-count matrices [R, k, k] at once (one per bootstrap round); see `_maximise`.

    `labels` gives each condition's group of the full data's comparison graph; scores are centred within
    each group. The virtual ties of the regularisation go on the pairs compared in the full data, so a
    resample that lost some comparisons keeps the full data's groups.
    """

    def __init__(self, labels, fitted, compared):
        k = len(labels)
        self.fitted = fitted
        same = (labels[:, None] == labels[None, :]) & fitted[:, None] & fitted[None, :]
        self.same_group = same
        # centring operator: subtract the mean of the condition's group (fitted conditions only)
        size = np.maximum(same.sum(1, keepdims=True), 1)
        self.centre = np.eye(k) - same / size
        self.prior = VIRTUAL_TIES * 0.5 * (compared & ~np.eye(k, dtype=bool))
        self.steps = max(1, int(np.ceil(np.log2(max(k, 2)))))
        self.null_space = same / size + np.diag(~fitted)

    def __call__(self, wins):
        """(scores [R, k] with NaN for unfitted conditions, regularised [R] bool)."""
        regularised = ~self._mle_exists(wins)
        wins = wins + regularised[:, None, None] * self.prior
        scores = self._maximise(wins)
        scores[:, ~self.fitted] = np.nan
        return scores, regularised

    def _mle_exists(self, wins):
        """True where, within every group, each condition can reach every other through a chain of wins
        (Hunter 2004, Assumption 1): then the likelihood has a finite maximum."""
        reach = (wins > 0) | np.eye(wins.shape[1], dtype=bool)
        for _ in range(self.steps):  # transitive closure by repeated squaring
            reach = (reach.astype(np.float32) @ reach.astype(np.float32)) > 0
        return (reach | ~self.same_group).all(axis=(1, 2))

    def _maximise(self, wins):
        """Maximum-likelihood log-strengths of each round, centred within each group.

        Each iteration takes one MM step of Hunter (2004, eq. 3), γ_i ← W_i / Σ_j N_ij / (γ_i + γ_j),
        which always raises the likelihood, then a Newton step on the log-strengths from there, kept only
        where it raises the likelihood further. MM alone converges linearly and crawls when strengths are
        far apart (5 s for 2,000 rounds of 10 conditions at log-strengths ±6, against 0.4 s at ±1); the
        Newton steps finish in a few iterations. Stops when no score moves by more than `_TOL`.
        """
        played = wins + np.swapaxes(wins, 1, 2)
        won = wins.sum(2)
        scores = np.zeros(won.shape)
        todo = np.arange(len(won))
        for _ in range(_MAX_ITER):
            current, n, w, counts = scores[todo], played[todo], won[todo], wins[todo]
            climbed = self._mm_step(current, n, w)
            newton = self._newton_step(climbed, n, w)
            better = self._loglik(newton, counts) >= self._loglik(climbed, counts)
            new = np.where(better[:, None], newton, climbed)
            change = np.abs(new - current).max(1)
            scores[todo] = new
            todo = todo[~(change <= _TOL)]
            if todo.size == 0:
                break
        return scores

    def _mm_step(self, scores, played, won):
        gamma = np.exp(scores)
        denominator = (played / (gamma[:, :, None] + gamma[:, None, :])).sum(2)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.log(won) - np.log(denominator)
        step[:, ~self.fitted] = 0.0
        return step @ self.centre.T

    def _newton_step(self, scores, played, won):
        """s + δ with (L + J) δ = ∇ℓ: L is the negative Hessian (a Laplacian with weights N_ij p_ij p_ji)
        and J adds the constants of each group, whose direction the likelihood does not see."""
        p = _logistic(scores[:, :, None] - scores[:, None, :])
        gradient = won - (played * p).sum(2)
        weight = played * p * (1.0 - p)
        system = -weight + np.eye(weight.shape[1]) * weight.sum(2)[:, :, None] + self.null_space
        try:
            delta = np.linalg.solve(system, gradient[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # cannot happen for connected groups; MM alone still converges
            return scores
        return (scores + delta) @ self.centre.T

    @staticmethod
    def _loglik(scores, wins):
        diff = scores[:, :, None] - scores[:, None, :]
        return -(wins * np.logaddexp(0.0, -diff)).sum(axis=(1, 2))


def _logistic(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _bootstrap(trials, fit, *, n_boot, seed, level):
    """Percentile interval of the scores over rounds that resample participants with replacement.

    A round's win counts are Σ_p c_p · wins_p, with c_p how often participant p was drawn
    (multinomial(P, 1/P)); the per-participant win counts [P, k·k] are computed once, so each block of
    rounds is one matrix product followed by a vectorised MM fit.
    """
    k, n_people = len(trials["conditions"]), trials["n_participants"]
    cell = trials["participant"] * (k * k)
    per_person = np.bincount(cell + trials["a"] * k + trials["b"], weights=trials["score"],
                             minlength=n_people * k * k)
    per_person += np.bincount(cell + trials["b"] * k + trials["a"], weights=1.0 - trials["score"],
                              minlength=n_people * k * k)
    per_person = per_person.reshape(n_people, k * k)
    rng = np.random.default_rng(seed)
    scores, n_regularised = [], 0
    for start in range(0, n_boot, _BOOT_CHUNK):
        rounds = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.multinomial(n_people, np.full(n_people, 1.0 / n_people), size=rounds)
        wins = (draws.astype(float) @ per_person).reshape(rounds, k, k)
        chunk, regularised = fit(wins)
        scores.append(chunk)
        n_regularised += int(regularised.sum())
    scores = np.concatenate(scores)
    alpha = 1.0 - level
    with np.errstate(invalid="ignore"):
        low, high = np.quantile(scores, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high, n_regularised


# --- binomial -----------------------------------------------------------------------------------------

def _binomial_two_sided_p(k, n, p=0.5):
    """Exact two-sided binomial p: total probability of outcomes no more likely than k (as binomtest)."""
    pmf = stats.binom.pmf(np.arange(n + 1), n, p)
    observed = pmf[k]
    # the same relative tolerance as scipy.stats.binomtest, so equally likely outcomes are counted
    return float(min(1.0, pmf[pmf <= observed * (1 + 1e-7)].sum()))


def _clopper_pearson(k, n, *, level):
    """Clopper & Pearson (1934) exact interval from beta quantiles."""
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _one_blas_thread():
    """The matrices here are small (hundreds of rows), where BLAS threads only get in each other's way: on a
    busy two-core machine the mixed model took 21 s with OpenBLAS's default threads and 0.5 s with one."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
