"""Check recorded emulator traffic against Azure's published API specs with ``oav``.

Each exchange is validated against the spec of its own resource provider (oav
passes silently when two loaded specs define the same operation), and every
exchange must be matched to a spec operation (oav passes silently on unknown
operations and api-versions). LRO polling URLs are in no spec and are left out,
as is every provider without a spec (resource groups, network).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from nixos_azure_publish.emulator.schemas import SPEC_FILES, SPEC_ROOT

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.router import Router

# name -> (the api-version the spec describes, spec file under the spec root)
SPECS: Final = {name: (file.split("/")[-2], file) for name, file in SPEC_FILES.items()}
SPEC_VERSIONS: Final = frozenset(version for version, _file in SPECS.values())
NOT_IN_SPECS: Final = frozenset({"Operations_Get", "OperationResults_Get"})


@dataclass
class Validation:
    """What oav said about a set of exchanges."""

    exchanges: int = 0
    operations: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def by_spec(
    router: Router, exchanges: list[dict[str, Any]]
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The exchanges a spec covers, with their operation ids, by spec name."""
    grouped: dict[str, list[tuple[str, dict[str, Any]]]] = {name: [] for name in SPECS}
    for exchange in exchanges:
        request = exchange["liveRequest"]
        route = router.resolve(request["method"], urlsplit(request["url"]).path).route
        if route.operation_id in NOT_IN_SPECS:
            continue
        for name, (version, _spec) in SPECS.items():
            if version in route.api_versions:
                grouped[name].append((route.operation_id, exchange))
    return grouped


def has_spec(exchange: dict[str, Any]) -> bool:
    """Whether the exchange's api-version is one the shipped specs describe.

    The emulator also serves older api-versions (those other clients send); the
    specs here describe only the newest, so such exchanges cannot be validated.
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(exchange["liveRequest"]["url"]).query)}
    return query.get("api-version") in SPEC_VERSIONS


def _run_oav(oav: str, folder: Path, spec: Path, report_path: Path) -> tuple[dict[str, Any], str]:
    run = subprocess.run(
        [
            oav,
            "validate-traffic",
            str(folder),
            str(spec),
            "--report",
            "",  # the HTML report crashes in oav 4.0.3
            "--jsonReport",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    return report, run.stdout + run.stderr


def validate(
    exchanges: list[dict[str, Any]],
    *,
    router: Router,
    oav: str,
    work: Path,
    spec_root: Path = SPEC_ROOT,
) -> Validation:
    """Run oav over *exchanges*, each against its provider's spec; collect every problem."""
    result = Validation()
    for name, recorded in by_spec(router, exchanges).items():
        if not recorded:
            continue
        folder = work / name
        folder.mkdir(parents=True)
        for index, (_operation, exchange) in enumerate(recorded):
            (folder / f"{index:05d}.json").write_text(json.dumps(exchange), encoding="utf-8")
        report, output = _run_oav(oav, folder, spec_root / SPECS[name][1], work / f"{name}.json")
        if "Undefined operation" in output:
            result.problems.append(f"{name}: oav found undefined operations")
        errors = report.get("errors", [])
        result.problems += [f"{name}: {json.dumps(error)[:2000]}" for error in errors]
        matched = {
            op
            for group in report.get("passedOperationsList", [])
            for op in group.get("operationIds", [])
        }
        matched |= {str(error.get("operationId")) for error in errors}
        result.problems += [
            f"{name}: {operation} was not matched to a spec operation"
            for operation in sorted({op for op, _ in recorded} - matched)
        ]
        result.exchanges += len(recorded)
        result.operations |= {op for op, _ in recorded}
    return result
