"""The house has one way down (docs/design.md): every import, at module level or inside a function,
goes to the importer's own layer or a layer below it, and no circle joins two modules or two
packages (a subpackage counts as a package of its own). The import graph is grimp's static read."""
import grimp
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

PACKAGES = ("benchmark", "attacks", "defenses", "reports")

# layer -> the layers it may import; the harness is the rest of ``benchmark`` (studies included)
MAY_IMPORT = {
    "core": {"core"},
    "attacks": {"core", "attacks"},
    "defenses": {"core", "attacks", "defenses"},
    "results": {"core", "results"},
    "reports": {"core", "results", "reports"},
    "harness": {"core", "attacks", "defenses", "results", "reports", "harness"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "benchmark":
        return parts[1] if len(parts) > 1 and parts[1] in ("core", "results") else "harness"
    return parts[0]


def package(graph, module: str) -> str:
    """The package a module belongs to: itself if it has children, else its parent."""
    return module if graph.find_children(module) else module.rpartition(".")[0]


@pytest.fixture(scope="module")
def imports():
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    edges = {(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)}
    return graph, edges


def cycles(nodes, edges) -> list[list[str]]:
    """The strongly connected components with more than one member."""
    nodes = sorted(nodes)
    index = {n: i for i, n in enumerate(nodes)}
    pairs = np.array([(index[a], index[b]) for a, b in edges if a != b] or np.zeros((0, 2), int))
    adjacency = csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(nodes),) * 2)
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    groups = [[n for n, lab in zip(nodes, labels) if lab == k] for k in np.unique(labels)]
    return [g for g in groups if len(g) > 1]


def test_every_import_points_to_its_own_layer_or_below(imports):
    graph, edges = imports
    upward = sorted(f"{a} ({layer(a)}) imports {b} ({layer(b)})"
                    for a, b in edges if layer(b) not in MAY_IMPORT[layer(a)])
    assert not upward, "\n".join(upward)


def test_no_circle_between_modules(imports):
    graph, edges = imports
    assert not cycles(graph.modules, edges)


def test_no_circle_between_packages(imports):
    graph, edges = imports
    package_edges = {(package(graph, a), package(graph, b)) for a, b in edges}
    assert not cycles({p for edge in package_edges for p in edge}, package_edges)


def test_the_check_sees_a_circle_and_an_upward_import():
    """The checks above can fail: a graph with a planted circle and a planted upward import."""
    graph = grimp.build_graph(*PACKAGES)
    graph.add_import(importer="benchmark.core.data", imported="attacks.base")
    edges = {(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)}
    assert any(layer(a) == "core" and layer(b) == "attacks" for a, b in edges)
    assert any({"benchmark.core.data", "attacks.base"} <= set(c) for c in cycles(graph.modules, edges))
