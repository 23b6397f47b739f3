"""The package's structure stays readable: wings import one way, no circles, short functions,
and every DVC stage lists the code it runs as dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "facekeys"

# Low to high: a module may import its own wing and lower ones only.
LAYERS = (
    "foundation",  # facekeys/errors.py, facekeys/params.py
    "data",
    "augment",
    "model",
    "inference",
    "evaluation",
    "export",
    "tracking",
    "wild",  # facekeys/wild: photos, video, filters, web app
    "orchestration",
    "entry points",  # facekeys/cli.py, facekeys/stage_runner.py
)
FOUNDATION = {"facekeys", "facekeys.errors", "facekeys.params"}
ENTRY_POINTS = {"facekeys.cli", "facekeys.stage_runner"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """facekeys modules a file imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n != "facekeys"}
    return found


def layer_of(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module in ENTRY_POINTS:
        return "entry points"
    wing = module.split(".")[1]
    assert wing in LAYERS, f"{module}: in no wing (add it to one, or to the layers here)"
    return wing


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, set(modules)) for name, path in modules.items()}


def test_every_module_lies_in_a_wing_whose_package_says_what_it_owns():
    for name, path in package_modules().items():
        layer_of(name)
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            assert doc and "import" in doc.lower(), f"{path}: say what it owns and may import"


def test_wings_import_only_their_own_and_lower_wings():
    wrong = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module))
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def _code_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(REPO / "stages").glob("*.py"),
                   *(REPO / "flows").glob("*.py")])  # fmt: skip


def test_flows_are_wiring_that_never_loads_tensors_or_data_frames():
    """Nothing in flows/ knows about tensors or tables: the serving process and every flow run
    import the flows without torch, pandas, OpenCV or MLflow (the stages, run by DVC, do)."""
    code = (
        "import sys, flows.serve, flows.pipeline, flows.dvc_tasks\n"
        "print(' '.join(m for m in ('torch', 'pandas', 'cv2', 'mlflow') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "", f"flows/ loads {loaded.stdout.strip()}"


def test_functions_stay_short():
    long = []
    for path in _code_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines}")
    assert not long, "\n".join(long)


def test_long_modules_say_why_at_their_top():
    silent = []
    for path in _code_files():
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_MODULE_LINES and "Longer than" not in doc:
            silent.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
    assert not silent, "\n".join(silent)


def _stage_code(stage: dict) -> tuple[Path, list[str]]:
    script = REPO / stage["cmd"].split()[1]
    return script, [str(d) for d in stage.get("deps", [])]


def _reached_modules(script: Path) -> set[str]:
    graph = import_graph()
    todo = list(imported_modules(script, set(package_modules())))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    return seen


@pytest.mark.parametrize(
    "stage", sorted(yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
)
def test_each_stage_lists_the_code_it_runs(stage):
    """A module the stage's script reaches (imports of imports, lazy ones too) lies in a folder or
    file its deps list, so editing it reruns the stage and a new module is never forgotten."""
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]
    script, deps = _stage_code(definition.get("do", definition))
    assert str(script.relative_to(REPO)) in deps
    modules = package_modules()
    missing = []
    for module in sorted(_reached_modules(script)):
        relative = str(modules[module].relative_to(REPO))
        if not any(relative == d or relative.startswith(d.rstrip("/") + "/") for d in deps):
            missing.append(relative)
    assert not missing, f"stage {stage} runs code its deps do not list: {missing}"
