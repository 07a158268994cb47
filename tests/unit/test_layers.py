"""STYLE.md's house, checked: the import-linter contracts in pyproject.toml hold on the code, and each one fails when
an arrow points the wrong way (an import added to the real graph: core -> an adapter, config -> rewards, the trainer
-> Prefect or MLflow)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
from importlinter.application.use_cases import read_user_options
from importlinter.domain.contract import registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def options():
    from importlinter.application.use_cases import _register_built_in_contract_types
    from importlinter.configuration import configure

    configure()  # what the `lint-imports` command does first: the readers of pyproject.toml
    _register_built_in_contract_types()
    return read_user_options(str(ROOT / "pyproject.toml"))


@pytest.fixture(scope="module")
def graph(options):
    session = options.session_options
    return grimp.build_graph(*session["root_packages"], include_external_packages=True, cache_dir=None)


def broken(options, graph, extra: tuple[str, str] | None = None) -> list[str]:
    """The names of the contracts that `graph` (plus one extra import, importer -> imported) breaks."""
    import copy

    g = copy.deepcopy(graph)
    if extra is not None:
        g.add_import(importer=extra[0], imported=extra[1])
    names = []
    for contract_options in options.contracts_options:
        cls = registry.get_contract_class(contract_options["type"])
        contract = cls(name=contract_options["name"], session_options=options.session_options,
                       contract_options=contract_options)
        if not contract.check(copy.deepcopy(g), verbose=False).kept:
            names.append(contract_options["id"])
    return names


def test_the_code_keeps_every_contract(options, graph):
    assert {c["id"] for c in options.contracts_options} == {"layers", "core", "recipe"}
    assert broken(options, graph) == []


@pytest.mark.parametrize(("importer", "imported", "contract"), [
    ("treegrpo.core.tree", "treegrpo.models.sd3", "layers"),  # the core reaches up to an adapter
    ("treegrpo.core.tree", "diffusers", "core"),  # the core takes a third-party model library
    ("treegrpo.config.reward", "treegrpo.rewards.registry", "layers"),  # config reaches up to rewards
    ("treegrpo.recipes.trainer", "mlflow", "recipe"),
    ("treegrpo.recipes.trainer", "prefect", "recipe"),
    ("treegrpo.models.sd3", "treegrpo.recipes.trainer", "layers"),  # an adapter imports the recipe
    ("treegrpo.recipes.trainer", "treegrpo.cli.train", "layers"),
])
def test_an_arrow_pointing_up_breaks_a_contract(options, graph, importer, imported, contract):
    assert contract in broken(options, graph, (importer, imported))


def test_every_module_of_the_package_sits_in_a_layer(options, graph):
    """A new module or subpackage must be placed in the house, or the layers contract would not see it: each module
    lies in a layer (is one or is inside one), or is a folder of layers (`treegrpo.recipes`) that imports nothing."""
    layers = next(c for c in options.contracts_options if c["id"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in str(layer).split("|")}
    modules = {m for m in graph.modules if m.startswith("treegrpo.")}
    unplaced = {m for m in modules if not any(m == p or m.startswith(p + ".") for p in placed)}
    folders = {m for m in unplaced if any(p.startswith(m + ".") for p in placed)}
    assert unplaced - folders == set()
    assert {f: graph.find_modules_directly_imported_by(f) for f in folders} == dict.fromkeys(folders, set())
