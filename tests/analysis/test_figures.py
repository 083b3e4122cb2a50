"""Figures: valid PNG and SVG files, the significance matrix's colours read back from the pixels, ordering
by mean, byte-identical output (also under other global rcParams and from several threads), long names,
empty input, bad input, and the numbers behind the drawings checked against independent computations
(scipy's Gaussian KDE, pandas' crosstab)."""
from __future__ import annotations

import threading
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib import colors as mcolors
from matplotlib.image import imread
from scipy import stats

from studies.analysis import figures
from studies.analysis.errors import AnalysisError

SVG_NS = "{http://www.w3.org/2000/svg}"


def _ratings(n_conditions=3, n_participants=12, seed=1, names=None, points=5):
    """Within design: every participant rates every condition twice; condition k is shifted by k/2."""
    rng = np.random.default_rng(seed)
    names = names or [f"cond{k}" for k in range(n_conditions)]
    rows = []
    for p in range(n_participants):
        for k, name in enumerate(names):
            for _ in range(2):
                value = int(np.clip(np.rint(2 + 0.5 * k + rng.normal(0, 1)), 1, points))
                rows.append({"participant": f"p{p}", "condition": name, "value": float(value),
                             "item": f"u{rng.integers(1, 4)}"})
    return pd.DataFrame(rows)


def _summary(df):
    grouped = df.groupby(["condition", "item"])["value"]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    table["ci_boot_low"] = table["mean"] - table["std"].fillna(0)
    table["ci_boot_high"] = table["mean"] + table["std"].fillna(0)
    table["n_ratings"] = table["count"]
    return table


# The 3-condition case used for colours: shown order natural (4.0) > baseline (3.0) > model (2.0).
PAIRS = [
    # baseline vs model: baseline (side a) significantly higher
    {"a": "baseline", "b": "model", "p_adj": 0.001, "significant": True, "direction": "a",
     "mean_a": 3.0, "mean_b": 2.0},
    # baseline vs natural: natural (side b) significantly higher
    {"a": "baseline", "b": "natural", "p_adj": 0.01, "significant": True, "direction": "b",
     "mean_a": 3.0, "mean_b": 4.0},
    # model vs natural: not significant after correction
    {"a": "model", "b": "natural", "p_adj": 0.2, "significant": False, "direction": "",
     "mean_a": 2.0, "mean_b": 4.0},
]


def _check_files(paths, stem):
    assert paths == [f"{stem}.png", f"{stem}.svg"]
    image = imread(paths[0])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    root = ET.parse(paths[1]).getroot()
    assert root.tag == f"{SVG_NS}svg"
    return image, root


def _svg_text(path) -> str:
    root = ET.parse(path).getroot()
    return " ".join("".join(node.itertext()) for node in root.iter(f"{SVG_NS}text"))


def _every_figure(tmp_path, df=None):
    df = _ratings() if df is None else df
    bt = pd.DataFrame({"condition": ["cond0", "cond1", "cond2"], "score": [-0.5, 0.1, 0.4],
                       "ci_low": [-0.8, -0.2, 0.1], "ci_high": [-0.2, 0.4, 0.7]})
    curve = {"curve": [{"n": 10, "power": 0.3}, {"n": 20, "power": 0.6}, {"n": 40, "power": 0.9}],
             "n_needed": 40, "target": 0.8}
    rows = [{"a": "cond0", "b": "cond1", "p_adj": 0.01, "significant": True, "direction": "b",
             "mean_a": 2.0, "mean_b": 2.5}]
    return {
        "significance_matrix": lambda stem: figures.significance_matrix(rows, ["cond0", "cond1"], stem, "Sig"),
        "box_violin": lambda stem: figures.box_violin(df, None, stem, "Ratings", "Rating"),
        "likert_stacked": lambda stem: figures.likert_stacked(df, None, 5, stem, "Answers"),
        "per_item": lambda stem: figures.per_item(_summary(df), stem, "Per item"),
        "bradley_terry_plot": lambda stem: figures.bradley_terry_plot(bt, stem),
        "power_curve": lambda stem: figures.power_curve(curve, stem),
    }


@pytest.fixture(scope="module")
def rendered_once(tmp_path_factory):
    """Every figure rendered once, the plain way: what the other renders must equal byte for byte."""
    folder = tmp_path_factory.mktemp("once") / "made_by_save"  # save_figure creates the folder
    df = _ratings(n_conditions=4)
    return df, {name: job(folder / name) for name, job in _every_figure(folder, df).items()}


@pytest.mark.parametrize("name", ["significance_matrix", "box_violin", "likert_stacked", "per_item",
                                  "bradley_terry_plot", "power_curve"])
def test_each_figure_writes_a_valid_png_and_svg(rendered_once, name):
    paths = rendered_once[1][name]
    stem = Path(paths[0]).with_suffix("")
    _check_files(paths, stem)
    assert not [p for p in stem.parent.iterdir() if p.name.endswith(".tmp")]


def test_significance_matrix_colours_read_back_from_the_png(tmp_path):
    order = figures.significance_order(PAIRS, ["model", "natural", "baseline"])
    assert order == ["natural", "baseline", "model"]  # by mean, not the order given
    fig = figures.build_significance_matrix(PAIRS, ["model", "natural", "baseline"], "Test")
    paths = figures.save_figure(fig, tmp_path / "sig")
    centres = figures.significance_cell_centres(fig, order)
    image = imread(paths[0])[:, :, :3]
    assert image.shape[:2] == (round(fig.bbox.height), round(fig.bbox.width))

    def colour(row, column):
        x, y = centres[(row, column)]
        return image[int(y), int(x)]

    green, red, grey = (np.array(mcolors.to_rgb(c))
                        for c in (figures.SIG_BETTER, figures.SIG_WORSE, figures.SIG_NS))
    expected = {
        ("natural", "baseline"): green, ("baseline", "natural"): red,  # natural preferred (direction "b")
        ("baseline", "model"): green, ("model", "baseline"): red,  # baseline preferred (direction "a")
        ("natural", "model"): grey, ("model", "natural"): grey,  # not significant
    }
    for (row, column), rgb in expected.items():
        np.testing.assert_allclose(colour(row, column), rgb, atol=2 / 255, err_msg=f"cell {row} × {column}")
    # What the colours mean, independent of the constants: green, red, neutral light grey, white diagonal.
    r, g, b = colour("natural", "baseline")
    assert g > r + 0.3 and g > b
    r, g, b = colour("baseline", "natural")
    assert r > g + 0.3 and r > b
    r, g, b = colour("natural", "model")
    assert abs(r - g) < 0.02 and abs(g - b) < 0.02 and 0.7 < r < 0.95
    for name in order:
        np.testing.assert_allclose(colour(name, name), [1.0, 1.0, 1.0], atol=1 / 255)
    assert len(fig.legends) == 1


def test_significance_matrix_marks_untested_pairs(tmp_path):
    rows = [{"a": "A", "b": "B", "p_adj": None, "significant": False, "direction": "", "mean_a": 1.0,
             "mean_b": 2.0}]
    fig = figures.build_significance_matrix(rows, ["A", "B"], "")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("n/a") == 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("Not tested" in t for t in legend)


def test_significance_matrix_ticks_follow_the_mean(tmp_path):
    fig = figures.build_significance_matrix(PAIRS, ["model", "natural", "baseline"], "")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["natural", "baseline", "model"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["natural", "baseline", "model"]
    kept = figures.build_significance_matrix(PAIRS, ["model", "natural", "baseline"], "", sort_by_mean=False)
    assert [t.get_text() for t in kept.axes[0].get_yticklabels()] == ["model", "natural", "baseline"]
    paths = figures.significance_matrix(PAIRS, ["model", "natural", "baseline"], tmp_path / "m", "Title here")
    text = _svg_text(paths[1])  # SVG text stays text: the labels can be found and edited
    assert "Title here" in text
    assert text.index("natural") < text.index("baseline") < text.index("model")


def test_other_figures_order_conditions_by_mean():
    df = _ratings(n_conditions=4)  # cond3 has the highest mean, cond0 the lowest
    by_mean = df.groupby("condition")["value"].mean().sort_values(ascending=False).index.tolist()
    violin = figures.build_box_violin(df, ["cond0", "cond1", "cond2", "cond3"], "", "Rating")
    assert [t.get_text() for t in violin.axes[0].get_xticklabels()] == by_mean
    likert = figures.build_likert_stacked(df, None, 5, "")
    assert [t.get_text() for t in likert.axes[0].get_yticklabels()] == by_mean  # top to bottom
    given = figures.build_box_violin(df, ["cond1", "cond0"], "", "Rating", sort_by_mean=False)
    assert [t.get_text() for t in given.axes[0].get_xticklabels()] == ["cond1", "cond0"]
    bt = pd.DataFrame({"condition": ["x", "y", "z"], "score": [0.1, 0.5, -0.6], "ci_low": [0.0, 0.3, -0.9],
                       "ci_high": [0.2, 0.7, -0.3]})
    plot = figures.build_bradley_terry_plot(bt)
    assert [t.get_text() for t in plot.axes[0].get_yticklabels()] == ["y", "x", "z"]


def _assert_same_bytes(first, second):
    for name in first:
        for one, two in zip(first[name], second[name]):
            assert Path(one).read_bytes() == Path(two).read_bytes(), f"{name}: {Path(one).suffix} differs"


def test_same_input_gives_the_same_bytes_whatever_the_global_rcparams(tmp_path, rendered_once):
    df, first = rendered_once
    odd = {"font.size": 20, "lines.linewidth": 5, "axes.facecolor": "black", "svg.hashsalt": None,
           "svg.fonttype": "path", "figure.dpi": 50, "savefig.dpi": 300, "font.family": "serif",
           "axes.prop_cycle": matplotlib.cycler(color=["red"])}
    with matplotlib.rc_context(odd):
        second = {name: job(tmp_path / name) for name, job in _every_figure(tmp_path, df).items()}
        assert matplotlib.rcParams["font.size"] == 20  # the caller's settings are left as they were
    _assert_same_bytes(first, second)
    for png, svg in first.values():
        assert b"<dc:date>" not in Path(svg).read_bytes()
        assert b"Software" not in Path(png).read_bytes()  # no matplotlib version in the PNG


def test_threads_give_the_same_bytes_as_one_thread(tmp_path, rendered_once):
    df, alone = rendered_once
    jobs = _every_figure(tmp_path, df)
    results, errors = {}, []

    def work(name):
        try:
            results[name] = jobs[name](tmp_path / name)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    _assert_same_bytes(alone, results)


def test_pyplot_and_its_backend_are_left_alone(tmp_path):
    import matplotlib.pyplot as plt

    plt.switch_backend("pdf")
    try:
        figures.power_curve([{"n": 10, "power": 0.5}], tmp_path / "p")
        assert matplotlib.get_backend().lower() == "pdf"
        assert plt.get_fignums() == []  # nothing registered with pyplot
    finally:
        plt.switch_backend("agg")


def _drawn_tick_labels(ax, x=True, y=True):
    """Tick labels matplotlib draws: non-empty and inside the view limits (the locator may add others)."""
    labels = []
    for axis, take, index in ((ax.xaxis, x, 0), (ax.yaxis, y, 1)):
        low, high = sorted(axis.get_view_interval())
        labels += [t for t in (axis.get_ticklabels() if take else [])
                   if t.get_text() and low - 1e-9 <= t.get_position()[index] <= high + 1e-9]
    return labels


def test_ten_long_names_stay_readable():
    names = [f"{k}_condition_name_of_30_chars__"[:30] for k in range(10)]
    assert all(len(n) == 30 for n in names)
    df = _ratings(names=names, n_participants=4)
    means = df.groupby("condition")["value"].mean()
    rows = [{"a": a, "b": b, "p_adj": 0.01, "significant": True, "direction": "a" if means[a] > means[b] else "b",
             "mean_a": means[a], "mean_b": means[b]} for i, a in enumerate(names) for b in names[i + 1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "layout not applied" or tick warnings
        built = [
            figures.build_significance_matrix(rows, names, "Ten conditions"),
            figures.build_box_violin(df, names, "Ten conditions", "Rating"),
            figures.build_likert_stacked(df, names, 5, "Ten conditions"),
            figures.build_per_item(_summary(df), "Ten conditions"),
        ]
        for fig in built:
            fig.canvas.draw()
    for fig in built:
        renderer = fig.canvas.get_renderer()
        canvas = fig.bbox
        ax = fig.axes[0]
        labels = _drawn_tick_labels(ax)
        assert labels
        for label in labels:  # nothing cut off at the edges
            box = label.get_window_extent(renderer)
            assert box.x0 >= canvas.x0 - 0.5 and box.x1 <= canvas.x1 + 0.5, label.get_text()
            assert box.y0 >= canvas.y0 - 0.5 and box.y1 <= canvas.y1 + 0.5, label.get_text()
        level = [t.get_window_extent(renderer) for t in _drawn_tick_labels(ax, x=False)]
        for upper, lower in zip(level, level[1:]):  # stacked labels do not touch
            assert not upper.overlaps(lower)
        for legend in fig.legends:  # the legend sits below the plot, inside the figure
            box = legend.get_window_extent(renderer)
            assert box.y0 >= canvas.y0 - 0.5 and box.x0 >= canvas.x0 - 0.5 and box.x1 <= canvas.x1 + 0.5
            assert box.y1 <= ax.get_tightbbox(renderer).y0 + 0.5
        assert fig.get_size_inches()[0] < 12 and fig.get_size_inches()[1] < 12
    matrix = built[0].axes[0]
    assert all(t.get_rotation() == 45 for t in matrix.get_xticklabels())


@pytest.mark.parametrize("name", ["significance_matrix", "box_violin", "likert_stacked", "per_item",
                                  "bradley_terry_plot", "power_curve"])
def test_empty_input_draws_a_no_data_figure(tmp_path, name):
    empty = pd.DataFrame({"participant": [], "condition": [], "value": [], "item": []})
    jobs = {
        "significance_matrix": lambda stem: figures.significance_matrix([], [], stem, "Sig"),
        "box_violin": lambda stem: figures.box_violin(empty, None, stem, "Ratings", "Rating"),
        "likert_stacked": lambda stem: figures.likert_stacked(empty, [], 5, stem, "Answers"),
        "per_item": lambda stem: figures.per_item(
            pd.DataFrame(columns=["condition", "item", "mean", "ci_boot_low", "ci_boot_high"]), stem, "Items"),
        "bradley_terry_plot": lambda stem: figures.bradley_terry_plot(
            pd.DataFrame(columns=["condition", "score", "ci_low", "ci_high"]), stem),
        "power_curve": lambda stem: figures.power_curve([], stem),
    }
    stem = tmp_path / name
    _check_files(jobs[name](stem), stem)
    assert "No data" in _svg_text(f"{stem}.svg")


def test_bad_input_raises_analysis_error(tmp_path):
    df = _ratings()
    with pytest.raises(AnalysisError, match="value"):
        figures.box_violin(df.drop(columns="value"), None, tmp_path / "x", "", "")
    with pytest.raises(AnalysisError, match="'b'"):
        figures.significance_matrix([{"a": "x"}], None, tmp_path / "x", "")
    with pytest.raises(AnalysisError, match="numbers"):
        figures.box_violin(df.assign(value="good"), None, tmp_path / "x", "", "")
    with pytest.raises(AnalysisError, match="1 to 5.*7"):
        figures.likert_stacked(df.assign(value=7.0), None, 5, tmp_path / "x", "")
    with pytest.raises(AnalysisError, match="2.5"):
        figures.likert_stacked(df.assign(value=2.5), None, 5, tmp_path / "x", "")
    with pytest.raises(AnalysisError, match="ci_boot_low"):
        figures.per_item(_summary(df).drop(columns="ci_boot_low"), tmp_path / "x", "")
    with pytest.raises(AnalysisError, match="'n'"):
        figures.power_curve([{"power": 0.5}], tmp_path / "x")
    with pytest.raises(AnalysisError, match="DataFrame"):
        figures.bradley_terry_plot([1, 2], tmp_path / "x")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_violin_density_matches_scipy_gaussian_kde():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(30, 8, 4000), rng.normal(70, 5, 2000)])
    grid, density = figures._kde(values)
    reference = stats.gaussian_kde(values, bw_method="scott")(grid)  # Scott's rule, exact sum
    np.testing.assert_allclose(density, reference / reference.max(), atol=0.01)
    flat_grid, flat = figures._kde(np.full(10, 4.0))
    assert flat is None and list(flat_grid) == [4.0, 4.0]


def test_likert_bars_are_the_answer_shares():
    df = _ratings(n_conditions=3, n_participants=20)
    fig = figures.build_likert_stacked(df, None, 5, "")
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    shares = pd.crosstab(df["condition"], df["value"], normalize="index").reindex(
        columns=[1.0, 2.0, 3.0, 4.0, 5.0], fill_value=0.0)
    bars = fig.axes[0].collections[0].get_paths()
    widths = {}
    for path in bars:
        xs, ys = path.vertices[:, 0], path.vertices[:, 1]
        widths.setdefault(int(round(ys.mean())), []).append(xs.max() - xs.min())
    for row, name in enumerate(names):
        expected = shares.loc[name].to_numpy()
        np.testing.assert_allclose(sorted(widths[row]), sorted(expected[expected > 0]), atol=1e-9)
    written = [float(t.get_text()) for t in fig.axes[0].texts
               if t.get_position()[0] > 1 and t.get_text() != "mean"]
    np.testing.assert_allclose(written, df.groupby("condition")["value"].mean()[names].round(2), atol=0.006)


def test_per_item_intervals_are_the_summary_cis():
    summary = _summary(_ratings(n_conditions=2))
    fig = figures.build_per_item(summary, "")
    segments = fig.axes[0].collections[0].get_segments()
    drawn = sorted((round(s[0][0], 9), round(s[1][0], 9)) for s in segments)
    expected = sorted(zip(summary["ci_boot_low"].round(9), summary["ci_boot_high"].round(9)))
    assert drawn == expected


def test_power_curve_draws_the_target_line():
    fig = figures.build_power_curve({"curve": [{"n": 20, "power": 0.5}, {"n": 10, "power": 0.2}],
                                     "target": 0.9, "n_needed": None})
    ax = fig.axes[0]
    targets = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(targets) == 1 and list(targets[0].get_ydata()) == [0.9, 0.9]
    curve = [line for line in ax.lines if line.get_marker() == "o"][0]
    assert list(curve.get_xdata()) == [10, 20] and list(curve.get_ydata()) == [0.2, 0.5]


def test_violins_mark_the_means_and_split_by_embodiment():
    df = _ratings(n_conditions=3)
    df["embodiment"] = np.where(np.arange(len(df)) % 2 == 0, "upper body", "full body")
    fig = figures.build_box_violin(df, None, "", "Rating")
    ax = fig.axes[0]
    bodies = ax.collections[0]
    assert len(bodies.get_paths()) == 6  # 3 conditions × 2 embodiments
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "upper body" in legend and "full body" in legend
    means = df.groupby(["condition", "embodiment"])["value"].mean()
    drawn = sorted(ax.lines[0].get_ydata())
    np.testing.assert_allclose(drawn, sorted(means.to_numpy()), rtol=1e-12)
    single = figures.build_box_violin(df.drop(columns="embodiment"), None, "", "Rating")
    names = [t.get_text() for t in single.axes[0].get_xticklabels()]
    np.testing.assert_allclose(single.axes[0].lines[0].get_ydata(),
                               df.groupby("condition")["value"].mean()[names].to_numpy(), rtol=1e-12)
