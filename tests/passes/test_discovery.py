"""Passes are discovered (every module of slimkit.passes, plus the `slimkit.passes` entry points of installed
packages), and a name taken twice is an error naming both classes."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import pytest

import slimkit.passes as passes_package
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.models.base import ModelKind, WorkingModel
from slimkit.passes import base
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, available_passes, get_pass, register
from slimkit.pipeline import parse_recipe, plan, run_pipeline


@pytest.fixture
def registry(monkeypatch):
    """The registry as discovered, restored after the test (passes a test registers do not leak)."""
    base.discover_passes()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    return base._REGISTRY


def _registered_names_in_source() -> set[str]:
    """The `name` of every @register-ed class in slimkit/passes/*.py, read from the source, not imported."""
    names = set()
    for path in Path(passes_package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "register" for d in node.decorator_list):
                names |= {stmt.value.value for stmt in node.body if isinstance(stmt, ast.Assign)
                          and getattr(stmt.targets[0], "id", None) == "name"}
    return names


def test_every_pass_module_is_found_without_a_list():
    found = available_passes()
    assert set(found) == _registered_names_in_source() and len(found) >= 20
    assert all(cls.__module__.startswith("slimkit.passes.") for cls in found.values())


class Impostor(Pass):
    name = "cluster"
    accepts = frozenset({ModelKind.ONNX})
    returns = None


def test_a_taken_name_is_an_error_naming_both_classes(registry):
    with pytest.raises(SlimkitError, match=r"two passes are named 'cluster': slimkit\.passes\.cluster\.Cluster "
                                           rf"and {Impostor.__module__}\.Impostor"):
        register(Impostor)
    assert get_pass("cluster").__module__ == "slimkit.passes.cluster"  # the first keeps the name
    assert register(get_pass("cluster")) is get_pass("cluster")  # the same class again is no conflict


class TagConfig(PassConfig):
    tag: str
    times: int = 1


class Tag(Pass):
    """A pass defined outside slimkit: records its tag on the model's source."""

    name = "test-tag"
    accepts = frozenset({ModelKind.ONNX})
    returns = None
    Config = TagConfig

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        tagged = copy.copy(model)  # a pass never changes its input
        tagged.source = model.source + f"#{self.config.tag * self.config.times}"
        return PassResult(tagged, {"tag": self.config.tag})


def test_a_pass_from_a_test_module_registers_plans_and_runs(registry, foreign_onnx, tmp_path):
    register(Tag)
    recipe = parse_recipe({"name": "tagged", "passes": [{"pass": "test-tag", "tag": "ab", "times": 2}]})
    steps = plan(recipe, ModelKind.ONNX)
    assert [(s.pass_.name, s.kind_out) for s in steps] == [("test-tag", ModelKind.ONNX)]
    model = load(foreign_onnx[0])
    result = run_pipeline(model, recipe, Context(workdir=tmp_path), planned=steps)
    assert result.model.source == model.source + "#abab" and result.steps[0]["stats"] == {"tag": "ab"}
    with pytest.raises(SlimkitError, match="pass 'test-tag': unknown key 'tags'"):
        plan(parse_recipe({"passes": [{"pass": "test-tag", "tag": "x", "tags": "x"}]}), ModelKind.ONNX)
    with pytest.raises(SlimkitError, match="pass 'test-tag': missing key 'tag'"):
        plan(parse_recipe({"passes": ["test-tag"]}), ModelKind.ONNX)


PLUGIN = '''
from slimkit.models.base import ModelKind
from slimkit.passes.base import Pass, PassResult


class Echo(Pass):
    name = "{name}"
    accepts = frozenset({{ModelKind.ONNX}})
    returns = None

    def run(self, model, ctx):
        return PassResult(model, {{"echo": True}})
'''


def _install_plugin(root: Path, dist: str, module: str, entry: str, source: str) -> None:
    """A package as pip would leave it: its module, and a .dist-info folder declaring its entry point."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[slimkit.passes]\n{entry}\n")


def test_an_installed_package_adds_a_pass_through_its_entry_point(registry, tmp_path, monkeypatch):
    _install_plugin(tmp_path, "slimkit_echo", "slimkit_echo_plugin", "echo = slimkit_echo_plugin:Echo",
                    PLUGIN.format(name="echo-plugin"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slimkit_echo_plugin", raising=False)
    base.discover_passes(again=True)
    cls = get_pass("echo-plugin")
    assert cls.__module__ == "slimkit_echo_plugin" and cls().run(None, Context()).stats == {"echo": True}


def test_an_entry_point_may_name_a_module_whose_passes_register_themselves(registry, tmp_path, monkeypatch):
    source = PLUGIN.format(name="echo-module").replace("class Echo", "@register\nclass Echo").replace(
        "import Pass, PassResult", "import Pass, PassResult, register")
    _install_plugin(tmp_path, "slimkit_echo_mod", "slimkit_echo_module", "echo = slimkit_echo_module", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slimkit_echo_module", raising=False)
    base.discover_passes(again=True)
    assert get_pass("echo-module").__module__ == "slimkit_echo_module"


def test_a_plugin_that_fails_to_load_is_one_clear_error(registry, tmp_path, monkeypatch):
    _install_plugin(tmp_path, "slimkit_broken", "slimkit_broken_plugin", "broken = slimkit_broken_plugin:Nope",
                    "import a_module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SlimkitError, match=r"the pass plugin 'broken' \(slimkit_broken_plugin:Nope\) failed to "
                                           r"load: No module named 'a_module_that_is_not_installed'"):
        base.discover_passes(again=True)


def test_a_plugin_pass_under_a_builtin_name_is_refused(registry, tmp_path, monkeypatch):
    _install_plugin(tmp_path, "slimkit_clash", "slimkit_clash_plugin", "clash = slimkit_clash_plugin:Echo",
                    PLUGIN.format(name="prune"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SlimkitError, match=r"two passes are named 'prune': slimkit\.passes\.prune\.Prune and "
                                           r"slimkit_clash_plugin\.Echo"):
        base.discover_passes(again=True)
