"""The docs cannot drift from the code: docs/config.md names exactly the config keys the
models accept, with their real defaults, and every config example in the docs parses."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cdc_bridge.config import BridgeConfig, parse_config

ROOT = Path(__file__).parents[2]
CONFIG_DOC = ROOT / "docs" / "config.md"
DOCS_WITH_EXAMPLES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Map-valued keys whose entries are named by the user: documented as a placeholder.
PLACEHOLDERS = {"tables": "<table>"}
# A REST operation may be written as text ("PUT /path") or as this mapping.
REST_OPERATION_PATH = "tables.<table>.rest.<op>"

_ROW = re.compile(r"^\| `([^`]+)` \|([^|]*)\|([^|]*)\|")
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Fragments showing only `tables:` are checked inside this minimal file.
MINIMAL_HEADER = (
    "system: erp\n"
    'database: {url: "postgresql://cdc@127.0.0.1/erp"}\n'
    'peer: {name: shop, url: "http://127.0.0.1:8082", secret: "s"}\n'
)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def model_keys(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every key path the model accepts (aliases as written in YAML) and its field."""
    keys: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        keys[path] = info
        annotation = info.annotation
        if name in PLACEHOLDERS:  # a mapping whose entries are named by the user
            path, annotation = f"{path}.{PLACEHOLDERS[name]}", typing.get_args(annotation)[1]
        nested = _models_in(annotation)
        if nested and nested[0].__name__ == "RestOperation":
            # insert/update/delete/read share one documented shape.
            path = REST_OPERATION_PATH
        for sub in nested:
            keys.update(model_keys(sub, path + "."))
    return keys


def documented_rows() -> dict[str, tuple[str, str]]:
    """Rows of the reference tables (headed `| Key | Type | Default | Meaning |`)."""
    rows: dict[str, tuple[str, str]] = {}
    in_reference = False
    for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_reference = False
        elif line.startswith("| Key | Type | Default | Meaning |"):
            in_reference = True
        elif in_reference and (match := _ROW.match(line)):
            key, kind, default = match.groups()
            assert key not in rows, f"{key} is documented twice"
            rows[key] = (kind.strip(), default.strip())
    return rows


def test_walk_finds_nested_and_aliased_keys() -> None:
    keys = model_keys(BridgeConfig)
    assert "database.schema" in keys  # YAML alias, not the Python field name
    assert "tables.<table>.sor" in keys
    assert "tables.<table>.rest.rename" in keys
    assert "tables.<table>.rest.<op>.method" in keys


def test_every_config_key_is_documented_and_nothing_else() -> None:
    assert set(documented_rows()) == set(model_keys(BridgeConfig))


def _documented_default(cell: str) -> Any:
    match = re.search(r"`([^`]*)`", cell)
    assert match, f"default {cell!r} should be a `value`"
    return yaml.safe_load(match.group(1))


def _model_default(info: FieldInfo) -> Any:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, types.MappingProxyType | dict) and not value:
        return {}
    if isinstance(value, tuple):  # a YAML list, kept immutable in the model
        return list(value)
    return getattr(value, "value", value)


def test_documented_defaults_are_the_model_defaults() -> None:
    rows = documented_rows()
    for key, info in model_keys(BridgeConfig).items():
        default_cell = rows[key][1]
        if info.is_required():
            assert default_cell == "required", key
        elif isinstance(info.get_default(call_default_factory=True), BaseModel):
            assert default_cell == "(all defaults)", key
        else:
            assert _documented_default(default_cell) == _model_default(info), key


def yaml_examples() -> list[tuple[str, str]]:
    examples = []
    for doc in DOCS_WITH_EXAMPLES:
        for i, block in enumerate(_YAML_BLOCK.findall(doc.read_text(encoding="utf-8"))):
            if re.search(r"^tables:", block, re.MULTILINE):
                examples.append((f"{doc.relative_to(ROOT)}#{i + 1}", block))
    return examples


def dummy_environment(text: str) -> dict[str, str]:
    return {
        name: "postgresql://cdc@127.0.0.1/db" if "DATABASE" in name else "dummy-value"
        for name in _ENV_REFERENCE.findall(text)
    }


def test_the_docs_hold_config_examples() -> None:
    sources = {source.split("#")[0] for source, _ in yaml_examples()}
    assert {"README.md", "docs/config.md"} <= sources


@pytest.mark.parametrize(("source", "block"), yaml_examples(), ids=lambda v: v[:40])
def test_config_example_parses(source: str, block: str) -> None:
    text = block if re.search(r"^system:", block, re.MULTILINE) else MINIMAL_HEADER + block
    config = parse_config(text, source, dummy_environment(text))
    assert config.table_specs


# Files the docs link to that other parts of the project provide.
PROVIDED_ELSEWHERE = {"docs/protocol.md", "bench/README.md"}
_LOCAL_LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)")


def test_local_links_in_the_docs_resolve() -> None:
    broken = []
    for doc in DOCS_WITH_EXAMPLES:
        for target in _LOCAL_LINK.findall(doc.read_text(encoding="utf-8")):
            path = (doc.parent / target).resolve()
            shown = path.relative_to(ROOT).as_posix()
            if not path.exists() and shown not in PROVIDED_ELSEWHERE:
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []
