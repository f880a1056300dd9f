"""Run the template's functions in-process, one "container" each.

Each handler module is imported once (its cold start) with its own
environment from the template applied, so it reads its settings exactly as
it would in Lambda. Invocations of one function are serialised, as one
Lambda execution environment handles one event at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from local.template import FunctionSpec

_ENV_LOCK = threading.Lock()


@dataclass
class LocalContext:
    """The parts of the Lambda context object that handlers use."""

    function_name: str
    invoked_function_arn: str
    timeout_s: int
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


class FunctionError(Exception):
    """A handler raised; carries Lambda's error shape."""

    def __init__(self, error_type: str, message: str, trace: list[str]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.payload = {"errorType": error_type, "errorMessage": message, "stackTrace": trace}


@contextlib.contextmanager
def applied_environment(variables: dict[str, str]) -> Iterator[None]:
    """Apply environment variables for the duration of a block (cold starts only)."""
    with _ENV_LOCK:
        previous = {k: os.environ.get(k) for k in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class LocalFunction:
    """One function: its spec, its handler (loaded lazily) and its lock."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self._handler: Callable[[Any, Any], Any] | None = None
        self._lock = threading.Lock()
        self.invocations = 0

    def _load(self) -> Callable[[Any, Any], Any]:
        module_file, _, attribute = self.spec.handler.rpartition(".")
        path = self.spec.code_dir / f"{module_file.replace('.', '/')}.py"
        module_name = f"herald_local_fn_{self.spec.logical_id}"
        with applied_environment(self.spec.environment):
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module: ModuleType = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        handler: Callable[[Any, Any], Any] = getattr(module, attribute)
        return handler

    def invoke(self, event: Any) -> Any:
        """Run the handler on one event; raises ``FunctionError`` if it raises."""
        with self._lock:
            if self._handler is None:
                self._handler = self._load()
            self.invocations += 1
            context = LocalContext(self.spec.name, self.spec.arn, self.spec.timeout)
            try:
                return self._handler(event, context)
            except Exception as exc:
                trace = traceback.format_exception(exc)
                raise FunctionError(type(exc).__name__, str(exc), trace) from exc


class FunctionHost:
    """All functions of a template, addressable by logical id, name or ARN."""

    def __init__(self, specs: list[FunctionSpec]) -> None:
        self.functions = {spec.logical_id: LocalFunction(spec) for spec in specs}
        self._aliases: dict[str, str] = {}
        for spec in specs:
            for alias in (spec.logical_id, spec.name, spec.arn):
                self._aliases[alias] = spec.logical_id

    def get(self, name: str) -> LocalFunction:
        """A function by logical id, function name, ARN or folder name."""
        key = name.split(":function:")[-1].split(":")[0] if ":function:" in name else name
        if key in self._aliases:
            return self.functions[self._aliases[key]]
        for function in self.functions.values():
            if function.spec.code_dir.name == key:
                return function
        raise KeyError(f"no function named {name}; known: {', '.join(sorted(self.functions))}")

    def invoke(self, name: str, event: Any) -> Any:
        """Invoke a function synchronously."""
        return self.get(name).invoke(event)
