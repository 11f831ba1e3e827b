"""Profiles: TOML files that describe one run of one model family.

A profile is parsed with tomllib (tomli before 3.11) into frozen dataclasses. The loader is generic:
each component owns its ``Config`` dataclass (the trainer, the checkpointer, the data layer, each
model family) and this module walks the TOML against those dataclasses, so a new field needs no
change here. Every mistake becomes one ``ProfileError`` line that names the file, the line where it
can be found, the key, the value and the rule::

    profiles/demo.toml:14: train.lr: must be > 0 (got -0.001)

``--set KEY=VALUE`` overrides are parsed by the type of the field they target, so
``--set train.schedule=cosine`` needs no TOML quoting while ``--set train.lr=abc`` is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import stat
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from podium.engine.checkpoints import CheckpointConfig
from podium.engine.errors import ProfileError
from podium.engine.families.registry import CORE_SECTIONS, Family, builtin_names, get_family
from podium.engine.train_config import TrainConfig


@dataclass(frozen=True)
class Profile:
    """A validated profile. ``model`` and ``data`` are the family's own config dataclasses."""

    name: str
    family: str
    description: str
    model: Any
    """The family's ``model_config`` dataclass."""
    data: Any
    """The family's ``data_config`` dataclass."""
    train: TrainConfig
    checkpoint: CheckpointConfig
    loss_weights: dict[str, float]
    sections: dict[str, Any] = field(default_factory=dict)
    """The family's own tables (``Family.sections``), built: name -> dataclass."""
    source: str = ""
    """Where the profile was read from (for messages); not part of the resolved profile."""

    @property
    def family_spec(self) -> Family:
        return get_family(self.family)

    def section(self, name: str) -> Any:
        """One of the family's own tables (e.g. the CP family's ``generate``)."""
        try:
            return self.sections[name]
        except KeyError:
            raise KeyError(f"family {self.family} has no [{name}] table") from None

    def to_dict(self) -> dict[str, Any]:
        """The resolved profile as plain data (what is saved with the run and hashed)."""
        out: dict[str, Any] = {
            "name": self.name,
            "family": self.family,
            "description": self.description,
        }
        for section in ("model", "data", "train", "checkpoint"):
            out[section] = _plain(getattr(self, section))
        for section, value in self.sections.items():
            out[section] = _plain(value)
        out["loss_weights"] = dict(self.loss_weights)
        return out

    def hash(self) -> str:
        """Stable hash of the resolved profile; checkpoints record it to detect mismatches."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """The resolved profile as TOML that ``load_profile`` reads back to an equal Profile."""
        return dump_toml(self.to_dict())


MAX_PROFILE_BYTES = 1024 * 1024
"""A profile is a page of TOML; a megabyte is far more than any needs."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""TOML's integer range; tomllib reads bigger ones, which overflow torch and numpy later."""
TOP_LEVEL = ("name", "family", "description", *CORE_SECTIONS)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --------------------------------------------------------------------------------------------
# Public entry points


def load_profile(path: str | Path, overrides: Sequence[str] = ()) -> Profile:
    """Read, override and validate a profile file.

    Raises:
        ProfileError: one line naming the file, line, key and what is wrong.
    """
    path = Path(path)
    return load_profile_text(read_profile_file(path), source=str(path), overrides=overrides)


def read_profile_file(path: Path) -> str:
    """The text of a profile: a regular file of at most ``MAX_PROFILE_BYTES``.

    Opened without blocking and checked before reading: ``/dev/zero`` would be read until memory
    runs out, a FIFO would wait forever for a writer, and a huge file would take minutes to parse.
    """
    shown = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ProfileError(f"{shown}: profile not found") from None
    except IsADirectoryError:
        raise ProfileError(f"{shown}: is a directory, expected a profile .toml file") from None
    except OSError as exc:
        raise ProfileError(f"{shown}: cannot read profile ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ProfileError(f"{shown}: is a directory, expected a profile .toml file")
        raise ProfileError(f"{shown}: not a regular file (a device, FIFO or socket)")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(
                f"{shown}: {st.st_size} bytes is too big for a profile "
                f"(at most {MAX_PROFILE_BYTES // 1024} KiB)"
            )
        try:
            data = f.read(MAX_PROFILE_BYTES + 1)
        except OSError as exc:
            raise ProfileError(f"{shown}: cannot read profile ({exc.strerror})") from None
    if len(data) > MAX_PROFILE_BYTES:  # it grew while we looked
        raise ProfileError(
            f"{shown}: too big for a profile (at most {MAX_PROFILE_BYTES // 1024} KiB)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{shown}: cannot read profile ({exc})") from None


def load_profile_text(
    text: str, *, source: str = "<profile>", overrides: Sequence[str] = ()
) -> Profile:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(_toml_error(source, str(exc), text)) from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ProfileError(f"{source}: TOML nested too deeply to read") from None
    loc = _Locator(source, text)
    for item in overrides:
        _apply_override(raw, item, loc)
    return _build_profile(raw, loc)


# --------------------------------------------------------------------------------------------
# Building


class _Locator:
    """Finds the line of a dotted key in the TOML text, and formats errors with it.

    tomllib keeps no positions, so this scans for table headers and ``key =`` lines. It is a best
    effort: dotted keys and headers are understood, keys inside inline tables fall back to the
    line of the table that holds them.
    """

    _header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            if m := self._header.match(line):
                table = self._split(m.group(1))
                self.lines.setdefault(table, number)
            elif m := self._key.match(line):
                self.lines.setdefault((*table, *self._split(m.group(1))), number)
        self.overridden: dict[tuple[str, ...], str] = {}

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in dotted.split("."))

    def where(self, keys: tuple[str, ...]) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.overridden:
                return f"{self.source}: --set {self.overridden[keys[:n]]}"
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.lines:
                return f"{self.source}:{self.lines[keys[:n]]}"
        return self.source

    def error(self, keys: tuple[str, ...], message: str) -> ProfileError:
        dotted = ".".join(keys)
        return ProfileError(
            f"{self.where(keys)}: {dotted}: {message}"
            if dotted
            else f"{self.where(keys)}: {message}"
        )


def _toml_error(source: str, message: str, text: str) -> str:
    m = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if m:
        reason = message[: m.start()].strip()
        return f"{source}:{m.group(1)}: TOML syntax error: {reason} (column {m.group(2)})"
    m = re.search(r"\(at end of document\)", message)
    if m:
        reason = message[: m.start()].strip()
        return f"{source}:{max(len(text.splitlines()), 1)}: TOML syntax error: {reason} (at end of file)"
    return f"{source}: TOML syntax error: {message}"


def _family(raw: Mapping[str, Any], loc: _Locator) -> Family:
    known = builtin_names()
    if "family" not in raw:
        raise loc.error(("family",), f"missing: say which model family, one of {', '.join(known)}")
    name = raw["family"]
    if not isinstance(name, str):
        raise loc.error(("family",), f"expected a string, got {_show(name)}")
    if name not in known and "." not in name:
        raise loc.error(("family",), _choice_message(name, tuple(known)))
    try:
        return get_family(name)
    except ProfileError as exc:
        raise loc.error(("family",), str(exc)) from None


def _build_profile(raw: dict[str, Any], loc: _Locator) -> Profile:
    family = _family(raw, loc)
    _reject_unknown(raw, (*TOP_LEVEL, *family.sections), (), loc)
    family_name = raw["family"]

    if "name" not in raw:
        # Required, like the family: an empty file must not train a default model by accident.
        raise loc.error(("name",), 'missing: give the profile a name, e.g. name = "my-run"')
    name = raw["name"]
    if not isinstance(name, str):
        raise loc.error(("name",), f"expected a string, got {_show(name)}")
    if not NAME_RE.match(name):
        raise loc.error(
            ("name",),
            f"{name!r} is not a safe name (letters, digits, '.', '_', '-'; at most 64; "
            "starting with a letter or digit)",
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise loc.error(("description",), f"expected a string, got {_show(description)}")

    classes = {
        "model": family.model_config,
        "data": family.data_config,
        "train": TrainConfig,
        "checkpoint": CheckpointConfig,
        **family.sections,
    }
    built = {}
    for section, cls in classes.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise loc.error((section,), f"expected a table, got {_show(table)}")
        built[section] = _build_dataclass(cls, table, (section,), loc)

    weights_raw = raw.get("loss_weights", {})
    if not isinstance(weights_raw, dict):
        raise loc.error(("loss_weights",), f"expected a table, got {_show(weights_raw)}")
    _reject_unknown(weights_raw, family.heads, ("loss_weights",), loc)
    weights: dict[str, float] = {}
    for head in family.heads:
        value = weights_raw.get(head, 1.0)
        keys = ("loss_weights", head)
        value = _check_type(value, float, keys, loc)
        if not value >= 0.0 or math.isinf(value):
            raise loc.error(keys, f"must be a finite number >= 0 (got {value})")
        weights[head] = value
    if not any(w > 0 for w in weights.values()):
        raise loc.error(("loss_weights",), "at least one head needs a weight > 0")

    # A dataset path is taken relative to the directory podium runs in, and stored absolute in
    # the resolved profile so a resume from another directory finds the same data.
    data_path = getattr(built["data"], "path", "")
    if isinstance(data_path, str) and data_path and not Path(data_path).expanduser().is_absolute():
        absolute = str(Path(data_path).expanduser().resolve())
        built["data"] = dataclasses.replace(built["data"], path=absolute)

    for metric in built["checkpoint"].best_metrics:
        if metric not in family.metrics:
            known = ", ".join(family.metrics) or "none"
            raise loc.error(
                ("checkpoint", "best_metrics"),
                f"{metric!r} is not a validation metric of family {family_name} (it has: {known})",
            )

    sections = {name: built.pop(name) for name in family.sections}
    try:
        family.check(built["model"], built["data"], sections)
    except ValueError as exc:
        dotted, _, message = str(exc).partition(": ")
        raise loc.error(tuple(dotted.split(".")), message) from None

    return Profile(
        name=name,
        family=family_name,
        description=description,
        loss_weights=weights,
        sections=sections,
        source=loc.source,
        **built,
    )


def _build_dataclass(
    cls: type, table: Mapping[str, Any], keys: tuple[str, ...], loc: _Locator
) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _reject_unknown(table, tuple(fields), keys, loc)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        kwargs[name] = _check_type(value, hints[name], (*keys, name), loc)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        field_name, sep, message = str(exc).partition(": ")
        if sep and field_name in fields:
            raise loc.error((*keys, field_name), message) from None
        raise loc.error(keys, str(exc)) from None


def _reject_unknown(
    table: Mapping[str, Any], known: Sequence[str], keys: tuple[str, ...], loc: _Locator
) -> None:
    for key in table:
        if key not in known:
            raise loc.error((*keys, key), _unknown_message(key, known))


def _unknown_message(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
    return f"unknown key{hint}"


def _choice_message(value: Any, choices: Sequence[str]) -> str:
    listed = ", ".join(repr(c) for c in choices)
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"must be one of {listed} (got {_show(value)}){hint}"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _check_type(value: Any, hint: Any, keys: tuple[str, ...], loc: _Locator) -> Any:
    """Return ``value`` converted to ``hint`` or raise a ProfileError naming the key."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise loc.error(keys, f"expected true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                raise loc.error(keys, f"out of range: TOML integers are 64-bit (got {value})")
            return value
        raise loc.error(keys, f"expected an integer, got {_show(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise loc.error(keys, "expected a number, got nan")
            return value
        raise loc.error(keys, f"expected a number, got {_show(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise loc.error(keys, f"expected a string, got {_show(value)}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) is type(choices[0]):
            return value
        raise loc.error(keys, _choice_message(value, choices))
    if origin is tuple:  # tuple[X, ...]: a TOML array of X
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise loc.error(keys, f'expected an array like ["a", "b"], got {_show(value)}')
        return tuple(_check_type(v, item_type, (*keys, str(i)), loc) for i, v in enumerate(value))
    if origin is dict:
        _key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise loc.error(keys, f"expected a table, got {_show(value)}")
        return {k: _check_type(v, value_type, (*keys, k), loc) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        return _check_type(value, args[0], keys, loc)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise loc.error(keys, f"expected a table, got {_show(value)}")
        return _build_dataclass(hint, value, keys, loc)
    raise TypeError(f"config field {'.'.join(keys)} has an unsupported type {hint!r}")


# --------------------------------------------------------------------------------------------
# --set overrides


def _apply_override(raw: dict[str, Any], item: str, loc: _Locator) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ProfileError(f"--set {item}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    keys = tuple(part.strip() for part in key.split("."))
    if any(not part for part in keys):
        raise ProfileError(f"--set {item}: {key!r} is not a dotted key like train.lr")
    hint = _hint_for(keys, raw, item)
    value = _parse_override(text.strip(), hint, keys, item)
    table = raw
    for part in keys[:-1]:
        nxt = table.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ProfileError(f"--set {item}: {part} is not a table")
        table = nxt
    table[keys[-1]] = value
    loc.overridden[keys] = item


def _hint_for(keys: tuple[str, ...], raw: Mapping[str, Any], item: str) -> Any:
    """The declared type at ``keys``; unknown keys are refused with a did-you-mean."""
    family_name = raw.get("family")
    family = None
    if isinstance(family_name, str):
        with contextlib.suppress(ProfileError):
            family = get_family(family_name)
    top: dict[str, Any] = {"name": str, "family": str, "description": str}
    if family is not None:
        top |= {
            "model": family.model_config,
            "data": family.data_config,
            "loss_weights": dict[str, float],
            **family.sections,
        }
    top |= {"train": TrainConfig, "checkpoint": CheckpointConfig}
    current: Any = None
    for depth, part in enumerate(keys):
        if depth == 0:
            known: Sequence[str] = tuple(top)
            current = top.get(part)
        elif dataclasses.is_dataclass(current):
            hints = typing.get_type_hints(current)
            known = tuple(f.name for f in dataclasses.fields(current) if f.init)
            current = hints.get(part) if part in known else None
        elif typing.get_origin(current) is dict:
            if part == "loss_weights" or keys[0] == "loss_weights":
                known = family.heads if family else ()
                if known and part not in known:
                    current = None
                else:
                    current = typing.get_args(current)[1]
            else:
                known = ()
                current = typing.get_args(current)[1]
        else:
            known = ()
            current = None
        if current is None:
            where = ".".join(keys[: depth + 1])
            message = _unknown_message(part, known) if known else "is not a table"
            raise ProfileError(f"--set {item}: {where}: {message}")
    return current


def _parse_override(text: str, hint: Any, keys: tuple[str, ...], item: str) -> Any:
    dotted = ".".join(keys)

    def bad(expected: str) -> ProfileError:
        return ProfileError(f"--set {item}: {dotted}: expected {expected}, got {text!r}")

    origin = typing.get_origin(hint)
    if hint is bool:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise bad("true or false")
    if hint is int:
        try:
            return int(text.replace("_", ""), 0)
        except ValueError:
            raise bad("an integer") from None
    if hint is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise bad("a number") from None
    if hint is str or origin is Literal:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            return text[1:-1]
        return text
    # Arrays and tables (dict or nested dataclass): a TOML value, checked with the profile.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        if origin is tuple:
            raise bad('an array like ["a", "b"]') from None
        raise bad("an inline table like { pitch = 2.0 }") from None


# --------------------------------------------------------------------------------------------
# Plain data and TOML output


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write plain data as TOML: scalars first, then one [table] per mapping (nested as [a.b])."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) or not v}
        tables = {k: v for k, v in table.items() if isinstance(v, dict) and v}
        if prefix:
            lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in tables.items():
            emit(v, (*prefix, k))

    emit(data, ())
    return "\n".join(lines).lstrip("\n") + "\n"
