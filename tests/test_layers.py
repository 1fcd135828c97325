"""The layer order of docs/architecture.md, enforced: no module imports from a layer above its
own (at the top or inside a function), and plugins under plugins/ import only segcli's public
API (`from segcli import NAME`, NAME in `segcli.__all__`)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import segcli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "segcli"
PLUGINS = ROOT / "plugins"

ARCHITECTURE = ROOT / "docs" / "architecture.md"


def documented_layers() -> list[tuple[str, tuple[str, ...]]]:
    """The layer table of docs/architecture.md, lowest first: (layer, its module prefixes). A
    module belongs to the layer of its longest matching prefix."""
    section = ARCHITECTURE.read_text().split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|`]+?) \| ((?:`[\w.]+`(?:, )?)+) \|", section, flags=re.MULTILINE)
    return [(name, tuple(re.findall(r"`([\w.]+)`", modules))) for name, modules in rows]


LAYERS = documented_layers()


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        # `segcli` itself is the package's __init__ only, not everything below it
        if module == prefix or (prefix != "segcli" and module.startswith(prefix + "."))
    ]
    if not matches:
        raise AssertionError(
            f"{module} is in no layer: add it to the layer table of docs/architecture.md"
        )
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").is_file() or (
        ROOT / relative / "__init__.py"
    ).is_file()


@dataclass(frozen=True)
class Import:
    target: str  # a segcli module
    names: tuple[str, ...]  # what `from target import ...` takes; () for `import target`
    line: int


def type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> list[Import]:
    """Every segcli import in the file, at any depth, except those only type checkers see."""
    tree = ast.parse(path.read_text(), str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: list[Import] = []

    def visit(node: ast.AST) -> None:
        if type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.extend(
                Import(a.name, (), node.lineno)
                for a in node.names
                if a.name.split(".")[0] == "segcli"
            )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] == "segcli":
                found.append(Import(base, tuple(a.name for a in node.names), node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def targets(imported: Import) -> list[str]:
    """The modules an import really reaches: `from segcli.cli import completion` is the module
    `segcli.cli.completion`; `from segcli import Plan` is the module defining that name."""
    if not imported.names:
        return [imported.target]
    reached = []
    for name in imported.names:
        if imported.target == "segcli" and name in segcli._PUBLIC_NAMES:
            reached.append(segcli._PUBLIC_NAMES[name])
        elif is_module(f"{imported.target}.{name}"):
            reached.append(f"{imported.target}.{name}")
        else:
            reached.append(imported.target)
    return reached


def upward_imports(paths: list[Path]) -> dict[tuple[str, str], str]:
    """(importer, imported) -> where, for every import that goes up the layer order."""
    upward = {}
    for path in paths:
        importer = module_name(path)
        for imported in imports_of(path):
            for target in targets(imported):
                if layer_of(target) > layer_of(importer):
                    where = f"{path.relative_to(ROOT)}:{imported.line}"
                    upward[(importer, target)] = (
                        f"{where}: {importer} ({LAYERS[layer_of(importer)][0]}) imports {target} "
                        f"({LAYERS[layer_of(target)][0]})"
                    )
    return upward


def segcli_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_layer_table_is_read_from_the_architecture_page():
    names = [name for name, _ in LAYERS]
    assert names[0] == "errors" and names[-1] == "cli" and "data" in names
    assert ("data", ("segcli.data",)) in LAYERS


def test_every_module_is_in_a_layer():
    for path in segcli_modules():
        layer_of(module_name(path))


def test_no_module_imports_from_a_layer_above_its_own():
    upward = "\n".join(where for _, where in sorted(upward_imports(segcli_modules()).items()))
    assert not upward, f"imports going up the layer order (docs/architecture.md):\n{upward}"


def test_an_upward_import_is_caught_at_the_top_and_inside_a_function(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    data = tmp_path / "segcli" / "data"
    data.mkdir(parents=True)
    (data / "top.py").write_text("from segcli.building import forward\n")
    (data / "inner.py").write_text("def f():\n    from segcli.cli import completion\n")
    (data / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from segcli.training import x\n"
    )
    (data / "lower.py").write_text(
        "from segcli.json_files import read_json\nfrom segcli import DataError\n"
    )
    (data / "public.py").write_text("from segcli import check_model\n")
    upward = upward_imports(sorted(data.glob("*.py")))
    assert set(upward) == {
        ("segcli.data.top", "segcli.building"),
        ("segcli.data.inner", "segcli.cli"),
        ("segcli.data.public", "segcli.testing"),
    }


def plugin_files() -> list[Path]:
    return sorted(path for path in PLUGINS.rglob("*.py") if "build" not in path.parts)


def outside_public_api(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wrong += [a.name for a in node.names if a.name.startswith("segcli.")]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.startswith("segcli."):
                wrong.append(f"from {node.module} import ...")
            elif node.module == "segcli":
                wrong += [f"segcli.{a.name}" for a in node.names if a.name not in segcli.__all__]
    return [f"{path.relative_to(PLUGINS.parent)}: {each}" for each in wrong]


@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_plugins_import_only_the_public_api(path):
    assert not outside_public_api(path), "use `from segcli import NAME` (docs/plugins.md)"


def test_a_plugin_import_outside_the_public_api_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.PLUGINS", tmp_path / "plugins")
    plugin = tmp_path / "plugins" / "mine.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "import segcli\nfrom segcli import DataError, read_json\n"
        "from segcli.runs.metrics import scalars\nimport segcli.weights\n"
        "from segcli import Predictor\n"
    )
    assert outside_public_api(plugin) == [
        "plugins/mine.py: from segcli.runs.metrics import ...",
        "plugins/mine.py: segcli.weights",
        "plugins/mine.py: segcli.Predictor",
    ]
