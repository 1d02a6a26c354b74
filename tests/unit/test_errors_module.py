"""Every error class of the package is defined in cdc_bridge/errors.py, which imports
nothing from the project (so any module can import it without a cycle)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import cdc_bridge
from cdc_bridge import errors

PACKAGE = Path(cdc_bridge.__file__).parent


def _exception_names() -> set[str]:
    return {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }


def test_no_error_class_is_defined_outside_errors_py() -> None:
    known = _exception_names() | {"Exception", "ValueError", "BaseException"}
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {getattr(b, "id", None) or getattr(b, "attr", "") for b in node.bases}
            if node.name.endswith("Error") or bases & known:
                strays.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert strays == []


def test_errors_py_imports_nothing_from_the_project() -> None:
    tree = ast.parse((PACKAGE / "errors.py").read_text(encoding="utf-8"))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    assert [name for name in imported if name.startswith("cdc_bridge")] == []


def test_moved_errors_keep_their_bases() -> None:
    # Callers catch these by their base: a ValueError from the codec or a body, a plain
    # Exception (not a BridgeError, which the CLI reports) for a refused change or signature.
    assert issubclass(errors.CodecError, ValueError)
    assert issubclass(errors.BodyError, ValueError)
    assert not issubclass(errors.Rejected, errors.BridgeError)
    assert not issubclass(errors.SignatureError, errors.BridgeError)
    assert issubclass(errors.NoSuchConflict, errors.UserError)
    assert errors.NoSuchConflict.exit_code == 2
    for name in ("EmbeddedServerError", "DemoError", "PeerReadError"):
        assert issubclass(getattr(errors, name), errors.BridgeError)
