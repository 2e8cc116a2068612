"""The package's layers (README "Code layout"): data < metrics < fusion < detection < pipeline.
A layer imports only the layers below it; the top-level plumbing modules may be imported by any
layer and import no layer. Walks every module's imports with ast, so lazy imports inside
functions count too."""
import ast
from pathlib import Path

import mmdrfuse

PACKAGE = Path(mmdrfuse.__file__).resolve().parent
LAYERS = ("data", "metrics", "fusion", "detection", "pipeline")
PLUMBING = ("errors", "files", "device", "native", "config")
ENTRY = ("cli", "__main__", "__init__")  # the console command: it registers every layer's commands


def imported_modules(path: Path):
    """Every ``mmdrfuse.X...`` module that ``path`` imports (absolute and relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ["mmdrfuse", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("mmdrfuse.") or name == "mmdrfuse":
                yield node.lineno, name


def unit_of(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for line, module in imported_modules(path):
            target = unit_of(module)
            if target is None or target == own or target not in LAYERS + PLUMBING:
                continue
            where = f"{relative}:{line} imports {module}"
            if own in PLUMBING:
                if target in LAYERS or (own != "config" and target == "config"):
                    found.append(f"{where} (plumbing imports no layer)")
            elif own in LAYERS and target in LAYERS and LAYERS.index(target) > LAYERS.index(own):
                found.append(f"{where} (upward: {own} is below {target})")
    return found


def test_no_upward_import_between_layers():
    assert violations() == []


def test_every_module_belongs_to_a_layer_or_the_plumbing():
    units = {p.relative_to(PACKAGE).parts[0] if p.parent != PACKAGE else p.stem for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYERS + PLUMBING + ENTRY), units - set(LAYERS + PLUMBING + ENTRY)


def test_the_walk_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a data module importing the pipeline (lazily, inside a function) is caught."""
    fake = tmp_path / "mmdrfuse"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from mmdrfuse.pipeline.run import run_pipeline\n")
    (fake / "errors.py").write_text("from .data import bad\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = violations()
    assert any("data/bad.py:2" in v and "upward" in v for v in found), found
    assert any("errors.py:1" in v and "plumbing" in v for v in found), found
