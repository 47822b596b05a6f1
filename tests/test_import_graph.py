"""The package's modules import each other without cycles, and only downwards through the
layer table of `docs/design.md`.

A cycle works only as long as every module in it happens to be imported in the right order,
and is usually hidden behind an import inside a function. This reads every module's imports
(wherever they are written), looks for a cycle among them, and checks each against the layers.
"""

import ast
import re
from pathlib import Path

import netvlad_tf

PACKAGE_ROOT = Path(netvlad_tf.__file__).parent
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


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
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def layer_ranks(design_text: str) -> dict[str, int]:
    """`{room: rank}` from the design's layer table rows `| rank | `room`, `room` | … |`."""
    ranks = {}
    for rank, rooms in re.findall(r"^\| (\d+) \| ([^|]+) \|", design_text, re.MULTILINE):
        for room in re.findall(r"`([a-z_]+)(?:\.py)?/?`", rooms):
            ranks[room] = int(rank)
    return ranks


def upward_edges(graph: dict[str, set[str]], ranks: dict[str, int]) -> list[str]:
    """Imports from a room to a room of a higher rank. The package's `__init__` is its public
    face: it may import anything, and nothing inside may import it (it stands above every room)."""
    def rank(module):
        return max(ranks.values()) + 1 if module == "netvlad_tf" else ranks[module.split(".")[1]]

    return sorted(f"{importer} → {imported}" for importer, targets in graph.items() if importer != "netvlad_tf"
                  for imported in targets if rank(imported) > rank(importer))


def test_layer_table_rules_on_hand_made_cases():
    ranks = layer_ranks("| 0 | `io/` | files |\n| 1 | `data/`, `cli.py` | datasets |\n")
    assert ranks == {"io": 0, "data": 1, "cli": 1}
    assert upward_edges({"netvlad_tf.io.a": {"netvlad_tf.data.b"}, "netvlad_tf.data.b": {"netvlad_tf.io.a"}}, ranks) \
        == ["netvlad_tf.io.a → netvlad_tf.data.b"]


def test_every_room_is_in_the_layer_table_and_imports_only_point_down():
    ranks = layer_ranks(DESIGN.read_text())
    modules = package_modules()
    rooms = {name.split(".")[1] for name in modules if name != "netvlad_tf"}
    assert rooms <= set(ranks), f"rooms missing from the layer table in docs/design.md: {sorted(rooms - set(ranks))}"
    graph = {name: imported_modules(path, modules) for name, path in modules.items()}
    assert upward_edges(graph, ranks) == []
