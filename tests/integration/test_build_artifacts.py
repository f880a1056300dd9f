"""`sam build` output imports as Lambda would: the function folder + the layer + boto3 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from local.template import default_template, project_root

BUILD = project_root() / ".aws-sam" / "build"

# Run with no site-packages at all: only what Lambda would put on sys.path.
PROBE = """
import importlib, json, sys
sys.path[:0] = {paths!r}
module_name, handler_name = {handler!r}.rsplit(".", 1)
module = importlib.import_module(module_name)
assert callable(getattr(module, handler_name))
print(json.dumps(sorted(m.split('.')[0] for m in sys.modules if m.startswith(('herald', 'pynamodb', 'pydantic')))))
"""


@pytest.mark.skipif(not BUILD.exists(), reason="run `make build` (make test does) to check the built artifacts")
@pytest.mark.parametrize("function", [f.logical_id for f in default_template().functions()])
def test_built_handler_imports_with_only_its_folder_and_the_layer(function: str) -> None:
    spec = next(f for f in default_template().functions() if f.logical_id == function)
    layer = BUILD / "HeraldLayer" / "python"
    assert (layer / "herald" / "__init__.py").exists()
    paths = [str(BUILD / function), str(layer)]
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", **spec.environment}
    result = subprocess.run(
        [sys.executable, "-S", "-c", PROBE.format(paths=paths, handler=spec.handler)],
        env=env,
        cwd=Path("/"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "herald" in result.stdout
