"""Options shared by `report` and `analyze` (the same analysis of a study or of a CSV), and their progress
line. Not a command itself (the leading underscore keeps Django from listing it)."""
from __future__ import annotations

from django.core.management.base import CommandError


def add_analysis_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the report into (made if missing)")
    parser.add_argument("--correction", default="holm", choices=("holm", "bonferroni", "bh", "none"),
                        help="multiple-comparison correction of the pairwise tests (default holm)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--zero-method", default="wilcox", choices=("wilcox", "pratt"),
                        help="Wilcoxon zero differences: dropped (wilcox, default) or ranked (pratt)")
    parser.add_argument("--n-boot", type=int, default=10_000, help="bootstrap rounds of the intervals (default 10000)")
    parser.add_argument("--bt-boot", type=int, default=2_000, help="bootstrap rounds of Bradley–Terry (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every bootstrap (default 0)")
    parser.add_argument("--power-effect", type=float,
                        help="also plan a follow-up: participants needed to detect this effect (in residual SDs)")
    parser.add_argument("--power-target", type=float, default=0.8, help="power wanted (default 0.8)")


def analysis_options(opts: dict) -> dict:
    options = {"correction": opts["correction"], "alpha": opts["alpha"], "zero_method": opts["zero_method"],
               "n_boot": opts["n_boot"], "bt_boot": opts["bt_boot"], "seed": opts["seed"]}
    if opts.get("power_effect") is not None:
        if opts["power_effect"] <= 0:
            raise CommandError("--power-effect must be a positive effect size (in residual SDs), e.g. 0.3")
        options["power"] = {"effect_size": opts["power_effect"], "target": opts["power_target"]}
    return options


class ProgressLine:
    """`stage … 42 %` on one line of stderr, rewritten in place."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def __call__(self, stage: str, fraction: float) -> None:
        text = f"{stage} … {fraction:4.0%}"
        if text != self.last:
            self.stream.write(f"\r{text:<60}", ending="")
            self.stream.flush()
            self.last = text

    def done(self) -> None:
        if self.last is not None:
            self.stream.write("")
