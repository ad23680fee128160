"""The library never imports the CLI: every module outside mars_eval/cli/ (lazy imports inside functions too)."""

import ast
from pathlib import Path

import mars_eval

ROOT = Path(mars_eval.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_library_modules_do_not_import_the_cli():
    library = [p for p in ROOT.rglob("*.py") if "cli" not in p.relative_to(ROOT).parts]
    assert len(library) > 50  # the walk found the package
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith("mars_eval.cli"))
                 for p in library}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from mars_eval.cli.common import progress\n")
    assert "mars_eval.cli.common" in _imports(f)
