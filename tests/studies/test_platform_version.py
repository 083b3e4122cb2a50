"""What made a published file: the platform's own version (`studies.__version__`, also `evalsite.__version__`)
is recorded beside the library versions in the significance report's summary.json (`versions.evalsite`, shown
on the page) and in the stimulus bundle's manifest.json and condition key (`platform_version`)."""
import io
import json
import re
import zipfile

import pandas as pd
from django.core.management import call_command

import evalsite
import studies
from studies import bundles


def test_the_platform_has_one_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", studies.__version__)
    assert evalsite.__version__ is studies.__version__


def test_the_report_summary_records_the_platform_version(tmp_path):
    from studies.analysis.run import run_analysis
    from studies.reports import write_report

    summary = run_analysis(pd.DataFrame(), design="within", title="empty")
    paths = write_report(summary, tmp_path)
    written = json.loads(paths["json"].read_text())
    assert written["versions"]["evalsite"] == studies.__version__
    assert {"python", "numpy", "scipy"} <= set(written["versions"])  # beside the libraries, not instead
    assert f"by evalsite {studies.__version__}" in paths["html"].read_text()


def test_the_bundle_and_its_key_record_the_platform_version(demo_study, tmp_path):
    full, blind = tmp_path / "full.zip", tmp_path / "blind.zip"
    for out, blind_flag in ((full, False), (blind, True)):
        call_command("export_stimuli", demo_study.slug, out=str(out), blind=blind_flag, stdout=io.StringIO(),
                     stderr=io.StringIO())
    for path, member in ((full, "manifest.json"), (blind, "manifest.json"),
                         (bundles.key_path_for(blind), "condition_key.json")):
        with zipfile.ZipFile(path) as zf:
            header = json.loads(zf.read(member))
        assert header["platform_version"] == studies.__version__, (path.name, member)
