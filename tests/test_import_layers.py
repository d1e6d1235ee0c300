"""The package imports one way (docs/design.md "Layers"): a module imports only from its
own layer and the layers below, and no chain of imports leads back to where it started.

Every import counts, lazy ones inside functions included (a cycle through a function
body is still a cycle the reader has to hold in their head); only `if TYPE_CHECKING:`
blocks, which never run, are skipped. Parsed with `ast`, so nothing is imported.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "llm2clip"

# Bottom to top. A unit is a top-level module or subpackage of llm2clip.
LAYERS = [
    # foundations: import nothing of ours but each other
    {"errors", "atomic_file", "config", "choices", "paths", "safe_loading", "distributed", "devices",
     "output_paths", "arg_types", "text_embeddings", "allocator"},
    {"vision", "losses", "adaptor"},  # vision towers and image loading | contrastive losses | the adaptor
    {"data"},  # caption records, sampling plans, image-text datasets (images read by vision/)
    {"baseline"},  # CLIP-style models with a conventional text tower (MiniLM, HF CLIP text)
    {"text"},  # text encoders: the protocol, the LLM caption encoder, [LLM ‖ CLIP text]
    {"model", "multi_encoder"},  # LLM2CLIP: vision tower + adaptor over a caption encoder
    {"embeddings"},  # the offline caption-embedding store
    {"eval"},  # benchmarks, metrics, reports
    {"train"},  # stage 1 (runs eval's CRA), stage 2
    {"search", "export"},  # using a trained model: image indexes and search | ONNX export
    {"cli", "demo", "__init__", "testing"},  # the commands; `import llm2clip` loads the models lazily; test fixtures
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = ["llm2clip", *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _skipping_type_checking(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the llm2clip modules it imports} (a `from X import name` of a submodule
    counts as importing that submodule)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        targets = set()
        for node in _skipping_type_checking(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in files else base)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    """The checks below can fail: a two-package loop (one side importing lazily) is found."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a" / "__init__.py").write_text("")
    (tmp_path / "b" / "__init__.py").write_text("")
    (tmp_path / "a" / "one.py").write_text("from ..b.two import thing\n")
    (tmp_path / "b" / "two.py").write_text("def thing():\n    from ..a import one\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["llm2clip.a.one", "llm2clip.b.two"]]


def test_no_module_is_part_of_an_import_cycle():
    assert cycles(import_graph()) == []


def test_every_unit_has_a_layer():
    units = {unit_of(module) for module in import_graph()}
    assert sorted(units - set(LAYER_OF)) == [], "add the new module or package to LAYERS (and docs/design.md)"


def test_packages_import_only_their_own_layer_and_below():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
                    if LAYER_OF.get(unit_of(target), -1) > LAYER_OF.get(unit_of(module), -1))
    assert upward == []


def test_the_units_form_no_cycle_either():
    units: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        units.setdefault(unit_of(module), set()).update(unit_of(t) for t in targets if unit_of(t) != unit_of(module))
    assert cycles(units) == []
