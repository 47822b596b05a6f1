"""The package's modules import each other without cycles.

A cycle works only as long as every module in it happens to be imported in the right order,
and is usually hidden behind an import inside a function. This reads every module's imports
(wherever they are written) and looks for a cycle among them.
"""

import ast
import importlib
from pathlib import Path

import netvlad_tf

PACKAGE_ROOT = Path(netvlad_tf.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that importing `path` runs: each named module and the packages
    above it, except the importer's own parent packages (Python has started those already)."""
    importer = module_name(path)
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.add(node.module)
            targets.update(f"{node.module}.{alias.name}" for alias in node.names)
    ran = set()
    for target in targets:
        parts = target.split(".")
        ran.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    own_packages = {".".join(importer.split(".")[:end]) for end in range(1, importer.count(".") + 1)}
    return {name for name in ran if name in modules and name not in own_packages and name != importer}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first = last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return stack[stack.index(successor):] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    modules = package_modules()
    graph = {name: imported_modules(path, modules) for name, path in modules.items()}
    assert "netvlad_tf.weights.lite0_pytorch" in graph["netvlad_tf.backbones.efficientnet_lite"]
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_the_weights_package_exports_each_name_from_its_module():
    import netvlad_tf.weights as weights

    assert sorted(weights.__all__) == sorted(weights._EXPORTS)
    for name in weights.__all__:
        module = importlib.import_module(f"netvlad_tf.weights.{weights._EXPORTS[name]}")
        assert getattr(weights, name) is getattr(module, name)
