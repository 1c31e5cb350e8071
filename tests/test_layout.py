"""The package layout holds: imports run one way between hpo's parts, learners know nothing of Optuna or
MLflow, and only hpo.storage looks at a storage URL's scheme."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# hpo's parts, lowest first: each may import only parts listed before it (and itself).
LAYERS = ["hpo.redaction", "hpo.errors", "hpo.logs", "hpo.storage", "hpo.config", "hpo.tracking", "hpo.reporting",
          "hpo.execution", "hpo.cli", "hpo.run", "hpo.__main__", "hpo"]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: not inside functions, not under ``if TYPE_CHECKING``."""
    imported: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    return imported


def part_of(module: str) -> str | None:
    """The layer a module of hpo belongs to (``hpo.storage._kinds`` → ``hpo.storage``)."""
    return max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len, default=None)


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("hpo"), ids=lambda p: module_name(p))
def test_hpo_imports_run_one_way(path: Path) -> None:
    own = part_of(module_name(path))
    for target in top_level_imports(path):
        layer = part_of(target)
        if layer is not None and layer != own:
            assert LAYERS.index(layer) < LAYERS.index(own), f"{module_name(path)} imports {target} ({layer})"


@pytest.mark.parametrize("path", modules("learners"), ids=lambda p: module_name(p))
def test_learners_know_nothing_of_hpo_optuna_or_mlflow(path: Path) -> None:
    for target in top_level_imports(path):
        assert target.split(".")[0] not in ("hpo", "optuna", "mlflow"), f"{module_name(path)} imports {target}"


def test_only_storage_decides_the_kind_of_a_storage_url() -> None:
    # A scheme test is a string comparison against a URL prefix; the schema's defaults and messages are text.
    scheme_test = re.compile(r"""startswith\(\(?["'](sqlite|journal|postgresql)""")
    offenders = [module_name(p) for p in modules("hpo") if part_of(module_name(p)) != "hpo.storage"
                 and scheme_test.search(p.read_text())]
    assert offenders == []
    assert scheme_test.search((REPO / "hpo" / "storage" / "_kinds.py").read_text())
