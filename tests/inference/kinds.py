"""Test helper: register model kinds under new names (EVALSITE_MODEL_KINDS), each a module of its own holding
a built-in kind's recipe renamed, as a researcher registers their own model (docs/models.md)."""
from inference.models import KINDS_ENV


def register_kinds(tmp_path, monkeypatch, kinds: dict[str, str], *, prefix: str = "lab_") -> dict[str, str]:
    """kinds: {new kind name: built-in kind whose recipe it takes}; returns `kinds`."""
    for kind, source in kinds.items():
        (tmp_path / f"{prefix}{kind}.py").write_text(
            "import dataclasses\n"
            "from inference.models import recipe\n"
            f"RECIPE = dataclasses.replace(recipe({source!r}), kind={kind!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(KINDS_ENV, ",".join(f"{kind}={prefix}{kind}" for kind in kinds))
    return kinds
