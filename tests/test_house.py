"""The package's shape: modules import only what sits below them in the pipeline's order, and none import
each other in a circle. Read from the source's own imports (lazy ones inside functions included)."""

import ast
from pathlib import Path

import spectro

PACKAGE = Path(spectro.__file__).parent

# The pipeline's order, lowest first (DESIGN.md): a module may import modules of its own layer or below.
LAYERS = [
    {"errors", "fileio", "allocator", "registry", "metrics", "locks", "speakers", "normalise"},
    {"corpora*", "features*", "models*", "synth"},
    {"config"},
    {"audio", "waveform_augment", "manifest", "leakage", "report", "ensemble_file"},
    {"image_tree"},
    {"packed"},
    {"rendering", "images"},
    {"data"},
    {"scoring", "checkpoint_file", "adversarial"},
    {"graph"},
    {"training*"},
    {"inference"},
    {"evaluate"},
    {"ensemble", "explore", "interpolate", "pseudo_label", "predict", "export", "listen", "serve*"},
    {"demo"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:  # the package's face (spectro/__init__.py) hands names on and holds the version
            found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            stem = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{stem}.{alias.name}".strip(".") if f"{stem}.{alias.name}".strip(".") in modules else stem)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spectro."):
            found.add(node.module.removeprefix("spectro."))
    return {m for m in found if m in modules and m != name}


def _layer(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            if name == entry or (entry.endswith("*") and name.split(".")[0] == entry[:-1]):
                return index
    raise AssertionError(f"spectro.{name} has no place in LAYERS; put it where it belongs in the pipeline")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_one_above_it_in_the_pipeline():
    upward = [(a, b) for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle():
    graph, state, circles = _graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_checks_see_real_imports():
    """A check that reads no imports would pass anything: these edges exist and are seen."""
    graph = _graph()
    assert {"scoring", "checkpoint_file", "run_folder"} & {d.split(".")[-1] for d in graph["training.trainer"]}
    assert "ensemble_file" in graph["evaluate"] and "evaluate" in graph["ensemble"]
    assert _layer("inference") > _layer("scoring") > _layer("data")
