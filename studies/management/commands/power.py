"""`manage.py power --design within --conditions 4 --effect 0.3` — participants needed for a planned study,
by simulating the analysis the report runs (the same pairwise tests and correction) on data with the
expected effect; prints the power curve and, with --out, writes it as a figure and JSON."""
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.analysis import figures
from studies.analysis.errors import AnalysisError
from studies.analysis.power import simulate_power


class Command(BaseCommand):
    help = "Participants needed for a target power, by simulation of the report's own analysis."

    def add_arguments(self, parser):
        parser.add_argument("--design", required=True, choices=("within", "between", "mushra"))
        parser.add_argument("--conditions", type=int, required=True, help="number of conditions compared")
        parser.add_argument("--effect", type=float, required=True,
                            help="expected difference of one condition from the others, in residual SDs")
        parser.add_argument("--n", default="10,20,30,40,60,80,100",
                            help="comma-separated numbers of participants to try (default 10,…,100)")
        parser.add_argument("--ratings-per-cell", type=int, default=1,
                            help="ratings each participant gives each condition (default 1)")
        parser.add_argument("--participant-sd", type=float, default=0.5, help="SD of participants' own levels")
        parser.add_argument("--residual-sd", type=float, default=1.0, help="SD of a single rating")
        parser.add_argument("--alpha", type=float, default=0.05)
        parser.add_argument("--correction", default="holm", choices=("holm", "bonferroni", "bh", "none"))
        parser.add_argument("--target", type=float, default=0.8, help="power wanted (default 0.8)")
        parser.add_argument("--n-sim", type=int, default=500, help="simulated studies per size (default 500)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", help="folder for power.json and the power-curve figure")

    def handle(self, *args, **opts):
        try:
            sizes = [int(x) for x in opts["n"].split(",") if x.strip()]
        except ValueError:
            raise CommandError(f"--n must be comma-separated whole numbers, got {opts['n']!r}")
        try:
            result = simulate_power(
                design=opts["design"], conditions=opts["conditions"], effect_size=opts["effect"],
                n_participants=sizes, ratings_per_cell=opts["ratings_per_cell"],
                participant_sd=opts["participant_sd"], residual_sd=opts["residual_sd"], alpha=opts["alpha"],
                correction=opts["correction"], n_sim=opts["n_sim"], seed=opts["seed"], target=opts["target"])
        except AnalysisError as exc:
            raise CommandError(str(exc))
        self.stdout.write(result["method"])
        for point in result["curve"]:
            self.stdout.write(f"  n = {point['n']:4d}  power {point['power']:.3f}")
        needed = result["n_needed"]
        self.stdout.write(f"participants needed for power {opts['target']:g}: "
                          f"{needed if needed is not None else f'more than {max(sizes)} (try larger --n)'}")
        if opts["out"]:
            out = Path(opts["out"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "power.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
            for path in figures.power_curve(result, out / "power"):
                self.stdout.write(f"figure: {path}")
