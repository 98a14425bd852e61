"""Loads frozen dataclasses from camelCase JSON-like data, and describes them as JSON Schema.

The dataclasses in :mod:`nixos_azure_publish.config` are the single source of
truth: this module reads their type hints to parse input (collecting every
problem with its field path instead of stopping at the first), to dump the
effective configuration back out, and to generate the JSON Schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, cast, get_args, get_origin

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_MISSING = dataclasses.MISSING

# Each scalar type: what messages call it, and which JSON values it takes (a boolean is
# not a number here, though Python says it is an int).
_SCALARS: dict[Any, tuple[str, Callable[[object], bool]]] = {
    str: ("a string", lambda v: isinstance(v, str)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
}


def camel(name: str) -> str:
    """``target_regions`` -> ``targetRegions``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def key_of(field: dataclasses.Field[Any]) -> str:
    """The input key of a dataclass field: its ``key`` metadata, else its camelCase name."""
    key = field.metadata.get("key")
    return key if isinstance(key, str) else camel(field.name)


def _type_name(tp: Any) -> str:  # noqa: ANN401 - any type expression
    origin = get_origin(tp)
    if tp in _SCALARS:
        return _SCALARS[tp][0]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "an object"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    return str(tp)


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Loader:
    def __init__(self) -> None:
        self.problems: list[str] = []
        # Problems that leave a value unparsed; an unknown key is a problem but not one of these.
        self.failures = 0

    def fail(self, path: str, message: str, *, parsed: bool = False) -> None:
        self.problems.append(f"{path}: {message}" if path else message)
        if not parsed:
            self.failures += 1

    def load(self, tp: Any, value: object, path: str) -> Any:  # noqa: ANN401, C901, PLR0912
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = get_args(tp)
            if value is None:
                if type(None) in args:
                    return None
                self.fail(path, f"must be {_type_name(tp)}, not null")
                return None
            candidates = [a for a in args if a is not type(None)]
            if len(candidates) == 1:
                return self.load(candidates[0], value, path)
            # A union of a scalar and an object (e.g. a region name or a region object):
            # pick the member by the JSON shape of the value.
            for candidate in candidates:
                if dataclasses.is_dataclass(candidate) and isinstance(value, dict):
                    return self.load(candidate, value, path)
                if candidate is str and isinstance(value, str):
                    return value
            self.fail(path, f"must be {_type_name(tp)}, not {_json_type_name(value)}")
            return None
        if tp is Any:
            return value
        if origin is Literal:
            allowed = get_args(tp)
            if value in allowed and type(value) is type(allowed[0]):
                return value
            near = ""
            if isinstance(value, str):
                folded = {str(a).lower(): a for a in allowed}
                if value.lower() in folded:
                    near = f" (did you mean {folded[value.lower()]!r}?)"
            self.fail(path, f"must be {_type_name(tp)}, not {value!r}{near}")
            return None
        if tp in _SCALARS:
            what, accepts = _SCALARS[tp]
            if accepts(value):
                return float(cast("float", value)) if tp is float else value
            self.fail(path, f"must be {what}, not {_json_type_name(value)}")
            return None
        if origin is tuple:
            (item_tp, _ellipsis) = get_args(tp)
            if not isinstance(value, list | tuple):
                self.fail(path, f"must be a list, not {_json_type_name(value)}")
                return None
            return tuple(self.load(item_tp, item, f"{path}[{i}]") for i, item in enumerate(value))
        if origin is dict:
            _key_tp, value_tp = get_args(tp)
            if not isinstance(value, dict):
                self.fail(path, f"must be an object, not {_json_type_name(value)}")
                return None
            out: dict[str, Any] = {}
            for k, v in value.items():
                out[str(k)] = self.load(value_tp, v, f"{path}.{k}" if path else str(k))
            return out
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.load_dataclass(tp, value, path)
        msg = f"unsupported type {tp!r} at {path}"
        raise TypeError(msg)

    def load_dataclass(self, cls: type[T], value: object, path: str) -> T | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, not {_json_type_name(value)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {key_of(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in value:
            if key not in fields:
                near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(fields)}"
                )
                self.fail(_join(path, str(key)), f"unknown key{hint}", parsed=True)
        kwargs: dict[str, Any] = {}
        ok = True
        for key, field in fields.items():
            sub = _join(path, key)
            if key in value:
                before = self.failures
                kwargs[field.name] = self.load(hints[field.name], value[key], sub)
                ok = ok and self.failures == before
            elif field.default is _MISSING and field.default_factory is _MISSING:
                self.fail(sub, "is required")
                ok = False
        if not ok:
            return None
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as error:  # a __post_init__ normalisation refused
            self.fail(path, str(error))
            return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load(cls: type[T], data: object) -> tuple[T | None, list[str]]:
    """Parse *data* into *cls*; return the instance and every problem.

    The instance is None when a value could not be parsed. Unknown keys are problems
    too, but they leave the instance whole (they are ignored), so that the caller can
    go on to check the values and report everything at once.
    """
    loader = _Loader()
    result = loader.load_dataclass(cls, data, "")
    return result, loader.problems


def dump(value: object) -> Any:  # noqa: ANN401 - JSON-like output
    """The camelCase JSON-like form of a dataclass instance, defaults included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key_of(f): dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value


def schema(tp: Any, *, defs: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: ANN401, C901, PLR0912
    """The JSON Schema of a type; dataclasses land in *defs* and are referenced."""
    defs = {} if defs is None else defs
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [schema(a, defs=defs) for a in get_args(tp)]
        return {"anyOf": members}
    if tp is type(None):
        return {"type": "null"}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is tuple:
        return {"type": "array", "items": schema(get_args(tp)[0], defs=defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema(get_args(tp)[1], defs=defs)}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            properties: dict[str, Any] = {}
            required: list[str] = []
            for field in dataclasses.fields(tp):
                prop = schema(hints[field.name], defs=defs)
                doc = field.metadata.get("doc")
                if doc:
                    prop = {**prop, "description": doc}
                if field.default is not _MISSING:
                    prop = {**prop, "default": dump(field.default)}
                elif field.default_factory is not _MISSING:
                    prop = {**prop, "default": dump(field.default_factory())}
                else:
                    required.append(key_of(field))
                properties[key_of(field)] = prop
            entry: dict[str, Any] = {
                "type": "object",
                "description": (tp.__doc__ or "").strip().splitlines()[0] if tp.__doc__ else "",
                "properties": properties,
                "additionalProperties": False,
            }
            if required:
                entry["required"] = required
            defs[name] = entry
        return {"$ref": f"#/$defs/{name}"}
    msg = f"unsupported type {tp!r}"
    raise TypeError(msg)
