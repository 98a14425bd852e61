"""Request bodies checked against Azure's published specs, as strictly as Compute does.

The specs the emulator ships (``specs/``, with their sources in
``specs/SOURCES.md``) describe each operation's request body. oav checks
recorded traffic against them after the fact, but it lets through what
Compute refuses: unknown members, read-only members and values outside
``modelAsString`` enums. This module turns each operation's body schema into
a JSON Schema with those rules added and validates every request before its
handler runs, answering what Compute answers:

- an unknown member: 400 ``InvalidRequestContent``, "Could not find member 'x'
  on object of type 'Y'. Path 'properties.x'" (the deserializer's own words);
- a value of the wrong JSON type, or outside a closed enum: 400
  ``InvalidRequestContent`` ("Error converting value ...");
- a read-only member, a missing required member, or a value outside a
  ``modelAsString`` enum: 400 ``InvalidParameter`` with the path as ``target``.

Enum values are compared without regard to case, as Compute parses them.
Top-level ``id``, ``name``, ``type`` and ``systemData`` are read-only but left
alone: Resource Manager ignores them in a PUT body.
"""

# ruff: noqa: ANN401 - JSON values and jsonschema's validator callbacks are untyped by nature

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jsonschema import Draft4Validator, validators
from jsonschema.exceptions import ValidationError

from nixos_azure_publish.emulator.armerror import ArmError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    Keyword = Callable[[Any, list[str], Any, Any], Iterator[ValidationError]]

SPEC_ROOT: Final = Path(__file__).resolve().parent / "specs"
STABLE: Final = "specification/compute/resource-manager/Microsoft.Compute/Compute/stable"
# name -> spec file under SPEC_ROOT; the api-version each describes is in its path.
SPEC_FILES: Final = {
    "disks": f"{STABLE}/2026-03-02/DiskRP.json",
    "galleries": f"{STABLE}/2026-03-03/GalleryRP.json",
    "compute": f"{STABLE}/2026-04-01/ComputeRP.json",
}
# Values Azure is known to accept beyond a spec's enum (by the enum's x-ms-enum name):
# a VM's security type "Standard" from api-version 2025-11-01 (the spec lists only
# TrustedLaunch and ConfidentialVM; the VM handler refuses it on older api-versions).
EXTRA_ENUM_VALUES: Final = {"SecurityTypes": ("Standard",)}
# Enums the service does not check: the spec's list of VM sizes is old and marked
# "not up to date" in its own description; sizes are checked against the catalogue.
UNCHECKED_ENUMS: Final = frozenset({"VirtualMachineSizeTypes"})
# Resource Manager's own envelope: read-only, but ignored rather than refused in a PUT body.
_ARM_ENVELOPE: Final = frozenset({"id", "name", "type", "systemData"})


@dataclass(frozen=True)
class _Where:
    """A schema's place: the spec file (relative to SPEC_ROOT) and a JSON pointer in it."""

    file: str
    pointer: str


class _Compiler:
    """Turns swagger 2.0 schemas into one JSON Schema with ``definitions`` per referenced type."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.definitions: dict[str, dict[str, Any]] = {}
        self._keys: dict[_Where, str] = {}

    def document(self, file: str) -> dict[str, Any]:
        if file not in self.documents:
            self.documents[file] = json.loads((SPEC_ROOT / file).read_text(encoding="utf-8"))
        return self.documents[file]

    def resolve(self, where: _Where, ref: str) -> _Where:
        target, _, pointer = ref.partition("#")
        file = where.file
        if target:
            file = str(Path(where.file).parent / target)
            # Normalise "a/b/../c" without touching the file system.
            parts: list[str] = []
            for part in file.split("/"):
                if part == "..":
                    parts.pop()
                elif part not in {"", "."}:
                    parts.append(part)
            file = "/".join(parts)
        return _Where(file, pointer)

    def lookup(self, where: _Where) -> dict[str, Any]:
        node: Any = self.document(where.file)
        for part in where.pointer.strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(node, dict):
            msg = f"{where} is not a schema"
            raise TypeError(msg)
        return node

    def reference(self, where: _Where) -> dict[str, Any]:
        """A ``$ref`` to the compiled definition at *where*, compiling it once."""
        key = self._keys.get(where)
        if key is None:
            name = where.pointer.rsplit("/", 1)[-1]
            key = name if name not in self.definitions else f"{name}.{len(self._keys)}"
            self._keys[where] = key
            self.definitions[key] = {}  # reserved: recursive types refer to it while compiling
            self.definitions[key] = self.schema(where, self.lookup(where), type_name=name)
        return {"$ref": f"#/definitions/{key}"}

    def _members(
        self, where: _Where, schema: dict[str, Any]
    ) -> tuple[dict[str, tuple[_Where, dict[str, Any]]], set[str], bool]:
        """Properties (with their places), required names, and whether any part is open."""
        members: dict[str, tuple[_Where, dict[str, Any]]] = {}
        required: set[str] = set(schema.get("required", []))
        open_ended = (
            "additionalProperties" in schema and schema["additionalProperties"] is not False
        )
        for part in schema.get("allOf", []):
            part_where = where
            if "$ref" in part:
                part_where = self.resolve(where, part["$ref"])
                part = self.lookup(part_where)  # noqa: PLW2901
            more, more_required, more_open = self._members(part_where, part)
            members.update(more)
            required |= more_required
            open_ended |= more_open
        for name, prop in schema.get("properties", {}).items():
            members[name] = (where, prop)
        return members, required, open_ended

    def schema(
        self, where: _Where, schema: dict[str, Any], *, type_name: str | None = None
    ) -> dict[str, Any]:
        if "$ref" in schema:
            return self.reference(self.resolve(where, schema["$ref"]))
        out: dict[str, Any] = {}
        kind = schema.get("type")
        modelled = schema.get("x-ms-enum", {})
        if "enum" in schema and modelled.get("name") not in UNCHECKED_ENUMS:
            accepted = EXTRA_ENUM_VALUES.get(modelled.get("name", ""), ())
            out["azureEnum"] = {
                "values": [str(v) for v in schema["enum"]] + list(accepted),
                "open": bool(modelled.get("modelAsString", False)),
                "name": modelled.get("name", type_name or "enum"),
            }
        if kind in {"string", "integer", "number", "boolean", "array"}:
            out["azureType"] = kind
        if kind == "array" and "items" in schema:
            out["items"] = self.schema(where, schema["items"])
        members, required, open_ended = self._members(where, schema)
        if kind == "object" or members or "allOf" in schema:
            out["azureType"] = "object"
            out["properties"] = {
                name: self.schema(place, prop) for name, (place, prop) in members.items()
            }
            out["azureRequired"] = sorted(required)
            out["azureReadOnly"] = sorted(
                name for name, (_place, prop) in members.items() if prop.get("readOnly")
            )
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = self.schema(where, extra)
            elif not open_ended and members:
                # An object with declared members and nothing else: Compute's deserializer
                # refuses any other member.
                out["azureClosed"] = type_name or "Object"
        return out


def _path(error_path: Iterator[Any] | Any) -> str:
    text = ""
    for part in error_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _type_ok(value: object, kind: str) -> bool:
    if value is None:
        # Compute's deserializer treats null as absent.
        return True
    return {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }[kind](value)


def _azure_type(
    _validator: Any, kind: str, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if not _type_ok(instance, kind):
        yield ValidationError(
            f"Error converting value {json.dumps(instance)} to type '{kind}'.",
            validator="InvalidRequestContent",
        )


def _azure_enum(
    _validator: Any,
    enum: dict[str, Any],
    instance: Any,
    _schema: Any,
) -> Iterator[ValidationError]:
    if instance is None or str(instance).lower() in {v.lower() for v in enum["values"]}:
        return
    allowed = ", ".join(f"'{v}'" for v in enum["values"])
    if enum["open"]:
        yield ValidationError(
            f"The value '{instance}' of parameter '{{path}}' is not allowed. "
            f"Allowed values are {allowed}.",
            validator="InvalidParameter",
        )
    else:
        yield ValidationError(
            f"Error converting value {json.dumps(instance)} to type '{enum['name']}'.",
            validator="InvalidRequestContent",
        )


def _member_check(wrong: Callable[[dict[str, Any], str], bool], message: str) -> Keyword:
    """A keyword that lists members: Azure's InvalidParameter at each one *wrong* in the object."""

    def check(
        _validator: Any, names: list[str], instance: Any, _schema: Any
    ) -> Iterator[ValidationError]:
        if not isinstance(instance, dict):
            return
        for name in names:
            if wrong(instance, name):
                error = ValidationError(message, validator="InvalidParameter")
                error.path.append(name)
                yield error

    return check


_azure_required = _member_check(
    lambda obj, name: obj.get(name) is None, "Required parameter '{path}' is missing (null)."
)
_azure_read_only = _member_check(
    lambda obj, name: name in obj, "The property '{path}' is read-only and cannot be set."
)


def _azure_closed(
    _validator: Any,
    type_name: str,
    instance: Any,
    schema: Any,
) -> Iterator[ValidationError]:
    if not isinstance(instance, dict):
        return
    for name in instance:
        if name not in schema.get("properties", {}):
            error = ValidationError(
                f"Could not find member '{name}' on object of type '{type_name}'. Path '{{path}}'.",
                validator="InvalidRequestContent",
            )
            error.path.append(name)
            yield error


_AzureValidator = validators.create(
    meta_schema=Draft4Validator.META_SCHEMA,
    validators={
        "$ref": Draft4Validator.VALIDATORS["$ref"],
        "properties": Draft4Validator.VALIDATORS["properties"],
        "additionalProperties": Draft4Validator.VALIDATORS["additionalProperties"],
        "items": Draft4Validator.VALIDATORS["items"],
        "azureType": _azure_type,
        "azureEnum": _azure_enum,
        "azureRequired": _azure_required,
        "azureReadOnly": _azure_read_only,
        "azureClosed": _azure_closed,
    },
)


class RequestSchemas:
    """The body schema of each operation in the shipped specs, compiled on first use."""

    def __init__(self) -> None:
        self._compiler = _Compiler()
        self._bodies: dict[str, tuple[_Where, dict[str, Any]]] | None = None
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _index(self) -> dict[str, tuple[_Where, dict[str, Any]]]:
        if self._bodies is None:
            bodies = {}
            for file in SPEC_FILES.values():
                doc = self._compiler.document(file)
                for item in doc["paths"].values():
                    for operation in item.values():
                        if not isinstance(operation, dict) or "operationId" not in operation:
                            continue
                        for param in operation.get("parameters", []):
                            where = _Where(file, "")
                            if "$ref" in param:
                                where = self._compiler.resolve(where, param["$ref"])
                                param = self._compiler.lookup(where)  # noqa: PLW2901
                            if param.get("in") == "body":
                                bodies[operation["operationId"]] = (where, param["schema"])
            self._bodies = bodies
        return self._bodies

    def operations(self) -> set[str]:
        """The operations with a request body in the specs."""
        with self._lock:
            return set(self._index())

    def validator(self, operation_id: str) -> Any | None:
        with self._lock:
            if operation_id not in self._validators:
                body = self._index().get(operation_id)
                if body is None:
                    self._validators[operation_id] = None
                else:
                    where, schema = body
                    root = self._compiler.schema(where, schema)
                    # The envelope of a resource is Resource Manager's, not the provider's.
                    top = root
                    if "$ref" in top:
                        top = self._compiler.definitions[top["$ref"].rsplit("/", 1)[-1]]
                    top = {
                        **top,
                        "azureReadOnly": [
                            n for n in top.get("azureReadOnly", []) if n not in _ARM_ENVELOPE
                        ],
                    }
                    self._validators[operation_id] = _AzureValidator(
                        {**top, "definitions": self._compiler.definitions}
                    )
            return self._validators[operation_id]

    def check_request(self, method: str, operation_id: str, body: object) -> None:
        """Check the body of a request that has one (PUT, PATCH, POST)."""
        if method in {"PUT", "PATCH", "POST"}:
            self.check(operation_id, body)

    def check(self, operation_id: str, body: object) -> None:
        """Raise Compute's error for the first problem of *body*, if any."""
        validator = self.validator(operation_id)
        if validator is None or body is None:
            return
        errors = sorted(validator.iter_errors(body), key=_order)
        if not errors:
            return
        error = errors[0]
        path = _path(error.absolute_path)
        message = error.message.replace("{path}", path)
        code = str(error.validator)
        if code == "InvalidRequestContent":
            where = f" Path '{path}'." if path and "Path '" not in message else ""
            raise ArmError(
                400,
                code,
                "The request content was invalid and could not be deserialized: "
                f"'{message}{where}'.",
                target=path or None,
            )
        raise ArmError(400, code, message, target=path or None)


def _order(error: ValidationError) -> tuple[int, int]:
    # Deserialization fails before any parameter check, and outer members come first.
    return (0 if error.validator == "InvalidRequestContent" else 1, len(error.absolute_path))


@cache
def shared() -> RequestSchemas:
    """One compiled set for the process: the specs are large and never change."""
    return RequestSchemas()
