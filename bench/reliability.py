"""Run the reliability suite with its long campaigns and write docs/reliability.md.

    .venv/bin/python bench/reliability.py            # fast variants and campaigns
    .venv/bin/python bench/reliability.py --fast     # the fast variants only (what CI runs)

Runs ``pytest tests/reliability`` (with ``-m "reliability or campaign"``, or
without the campaigns), collecting the figures each scenario records
(tests/reliability/figures.py) and the session's secrets-scan line, then
writes the table. A failing scenario still gets its row (with its failures);
the script exits with pytest's status. Run it from a checkout set up by
``bash scripts/test`` (it uses .venv and the offline Nix configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "reliability.md"

# How each scenario is tested, by the prefix of its name (tests/reliability/*.py).
HOW = {
    "network faults": (
        "publishes through a fault proxy on the blob path (HTTP_PROXY: 5 % resets before, 3 %"
        " after the server saw the page, 5xx, 429 + Retry-After, truncated and corrupted bodies)"
        " and the emulator's faults on Resource Manager (10 % 503, a 429 storm, seeded 429s);"
        " every third publish meets a failed long-running operation and is rerun"
    ),
    "crash": (
        "the publisher is SIGKILLed (at a step's start, or after N acknowledged page writes,"
        " frozen there by the proxy) and rerun with the same state directory"
    ),
    "crash: SIGKILL inside an import": (
        "`import` of a disk's read SAS URL (copied server-side with Put Page From URL) or of"
        " an https URL (streamed) is SIGKILLed after N acknowledged writes, frozen there by"
        " the proxy, and rerun"
    ),
    "expiry": (
        "write SAS of 3 s against an upload slowed to outlast it; tokens that live 2 s during"
        " a replication of several seconds"
    ),
    "expiry: read SAS of an import source": (
        "the copy of a disk's read SAS URL is frozen after 3 ranges until that SAS has"
        " expired, then let go on; then `import` with a new read SAS URL of the same disk"
    ),
    "replication failure": (
        "the emulator fails replication in one region (Failed with details, as Azure reports"
        " it); then a rerun with the region healthy"
    ),
    "interrupt": "SIGINT / SIGTERM while the step runs, then a rerun",
    "load": "publishers as separate processes; peak RSS is each one's VmHWM, read while it runs",
    "bad input": "the command line in-process against a running emulator",
    "secrets": "every test of the session (tests/secretscan.py)",
}
WHAT = {
    "network faults": "all complete; disks byte-identical to their images; one version each",
    "crash": "rerun completes: one version, no orphaned disk, replication complete",
    "crash: SIGKILL inside an import": (
        "rerun completes: one version, replicated, the disk byte-identical to the source;"
        " the copy resumes, the stream starts over"
    ),
    "expiry": "granted again and resumed / new tokens asked for; the publish completes",
    "expiry: read SAS of an import source": (
        "exit 6, `source-sas-expired`, one line naming the source's read SAS and asking for a"
        " new URL; with it the copy resumes (only missing ranges) and completes"
    ),
    "replication failure": (
        "exit 4 naming the region and its details, rerun helps, a row per region in the"
        " summary, disk kept with access revoked; the rerun replaces the version: one"
        " version, replicated everywhere, nothing orphaned"
    ),
    "interrupt": "exit 130, write access revoked, smoke-test VM/NIC/VNet deleted; rerun completes",
    "load": "no error; one version per image; bounded memory",
    "bad input": "one error line, the documented exit code, no traceback, no write to Azure",
    "secrets": "no SAS signature, bearer token, client secret or account key anywhere",
}


def run(*, fast: bool, figures: Path) -> tuple[int, str, float]:
    marker = "reliability" if fast else "reliability or campaign"
    env = dict(os.environ, NIXOS_AZURE_PUBLISH_RELIABILITY_FIGURES=str(figures))
    nix_config = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(REPO / "scripts" / "nix-config")],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if nix_config:
        env["NIX_CONFIG"] = nix_config
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pytest"), "tests/reliability", "-q", "-p",
         "no:cacheprovider", "-m", marker, "--timeout", "1800"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    sys.stdout.write(proc.stdout[-4000:])
    return proc.returncode, proc.stdout, time.monotonic() - started


def _sum(rows: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key) or 0) for r in rows)


def _max(rows: list[dict[str, Any]], key: str) -> float:
    return max(float(r[key]) for r in rows if r.get(key) is not None)


# One phrase per figure a scenario may record, in the order they are shown.
Rows = list[dict[str, Any]]
PHRASES: tuple[tuple[str, Callable[[Rows], str]], ...] = (
    ("upload_faults", lambda rows: f"{_sum(rows, 'upload_faults')} upload faults injected"),
    ("arm_faults", lambda rows: f"{_sum(rows, 'arm_faults')} Resource Manager faults"),
    (
        "failed_operations_rerun",
        lambda rows: f"{_sum(rows, 'failed_operations_rerun')} failed operations rerun",
    ),
    ("identical_disks", lambda rows: f"{_sum(rows, 'identical_disks')} disks byte-identical"),
    ("duplicate_versions", lambda rows: f"{_sum(rows, 'duplicate_versions')} duplicate versions"),
    (
        "resent_ratio_max",
        lambda rows: f"bytes re-sent / bytes missing: max {_max(rows, 'resent_ratio_max'):.3f}",
    ),
    (
        "recopied_ratio_max",
        lambda rows: (
            f"ranges copied again / ranges missing: max {_max(rows, 'recopied_ratio_max'):.3f}"
        ),
    ),
    (
        "restream_ratio_max",
        lambda rows: (
            f"bytes sent again / bytes missing: max {_max(rows, 'restream_ratio_max'):.3f}"
            " (the stream starts over)"
        ),
    ),
    (
        "ranges_total",
        lambda rows: (
            f"{_sum(rows, 'ranges_copied_before')} of {_sum(rows, 'ranges_total')} ranges"
            f" copied before the SAS ran out, {_sum(rows, 'ranges_copied_after')} with the new URL"
        ),
    ),
    ("repaired", lambda rows: f"{_sum(rows, 'repaired')} repaired by the rerun"),
    ("write_grants", lambda rows: f"{_max(rows, 'write_grants'):.0f} write grants"),
    (
        "bytes_sent",
        lambda rows: (
            f"{_sum(rows, 'bytes_sent'):,} data bytes sent for {_sum(rows, 'data_bytes'):,}"
            " (every attempt counted)"
        ),
    ),
    ("tokens_asked", lambda rows: f"{_max(rows, 'tokens_asked'):.0f} tokens asked for"),
    (
        "peak_rss_mib",
        lambda rows: f"peak RSS {_max(rows, 'peak_rss_mib'):.0f} MiB per publisher",
    ),
    ("seconds", lambda rows: f"{_max(rows, 'seconds'):.0f} s"),
    ("cases", lambda rows: f"{_sum(rows, 'cases')} cases"),
)


def measured(rows: list[dict[str, Any]]) -> str:
    """The measured figures of one scenario's records, as one cell."""
    keys = {k for r in rows for k in r if r[k] is not None}
    return "; ".join(phrase(rows) for key, phrase in PHRASES if key in keys) or "-"


def _failure_lines(records: list[dict[str, Any]]) -> list[str]:
    """What each failed run said (its error's message and hint), once per distinct text."""
    seen: dict[str, list[str]] = defaultdict(list)
    for record in records:
        for detail in record.get("failure_detail") or []:
            try:
                error = json.loads(detail[2])["error"]
                text = (
                    f"exit {error['exitCode']}, rerunHelps {str(error['rerunHelps']).lower()}:"
                    f" {error['message']}. {error['hint']}"
                )
            except (ValueError, KeyError, TypeError, IndexError):
                text = f"exit {detail[1]}: the run's report did not say what went wrong"
            text = re.sub(r"\b\d+\.\d+\.\d+\b", "<version>", text)
            seen[text].append(f"{record['scenario']} ({record['method']})")
    return [
        f"- {len(where)} x {text} - in {', '.join(sorted(set(where)))}"
        for text, where in seen.items()
    ]


def render(
    records: list[dict[str, Any]], output: str, *, status: int, seconds: float, fast: bool
) -> str:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_scenario[record["scenario"]].append(record)
    scan = re.search(r"secrets scan: (\d+) texts scanned, (\d+) secrets found", output)
    if scan:
        by_scenario["secrets: whole test session"].append(
            {"runs": 1, "failures": int(scan.group(2) != "0"), "method": "session",
             "texts": int(scan.group(1)), "found": int(scan.group(2))}
        )  # fmt: skip
    lines = [
        "# Reliability and security figures",
        "",
        "Generated by `.venv/bin/python bench/reliability.py"
        + (" --fast" if fast else "")
        + "` (do not edit by hand). Each scenario ends with nothing lost: no duplicate"
        " version, no orphaned resource, access revoked, the user told what happened.",
        (
            "The fast variants run in CI with `bash scripts/test`; the campaigns are marked"
            " `campaign` and run with `pytest -m campaign tests/reliability` or this script."
        ),
        "",
        (
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python"
            f" {platform.python_version()}; run took {seconds / 60:.1f} min; pytest exit"
            f" status {status}."
        ),
        "",
        "| scenario | how it is tested | expected | variants | runs | failures | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario in sorted(by_scenario):
        rows = by_scenario[scenario]
        family = max((k for k in HOW if scenario.startswith(k)), key=len, default="")
        runs = sum(int(r.get("runs") or 0) for r in rows)
        failures = sum(int(r.get("failures") or 0) for r in rows)
        variants = ", ".join(sorted({str(r.get("method", "")) for r in rows}))
        cell = measured(rows)
        if scenario.startswith("secrets"):
            found = sum(r["found"] for r in rows)
            cell = f"{rows[0]['texts']:,} texts scanned, {found} secrets found"
        lines.append(
            f"| {scenario} | {HOW.get(family, '')} | {WHAT.get(family, '')} | {variants}"
            f" | {runs} | {failures} | {cell} |"
        )
    failures = _failure_lines(records)
    if failures:
        lines += [
            "",
            "## Failures",
            "",
            (
                "What each failed run said. A run fails when it does not end as its scenario"
                " expects; after a failed long-running operation that is exit 4 with"
                " `rerunHelps: true`, since the rerun repairs it (and does, in the same run)."
            ),
            "",
            *failures,
        ]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fast", action="store_true", help="only the fast variants")
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--figures", type=Path, help="also keep the raw records (JSON lines)")
    args = parser.parse_args()
    # Started in the background of a script, the suite would ignore SIGINT: its
    # conftest gives the publishers of the interrupt scenarios the default back.
    with tempfile.TemporaryDirectory(prefix="reliability-") as work:
        figures = Path(work) / "figures.jsonl"
        status, output, seconds = run(fast=args.fast, figures=figures)
        text = figures.read_text(encoding="utf-8") if figures.exists() else ""
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if args.figures is not None:
        args.figures.write_text(text, encoding="utf-8")
    args.output.write_text(
        render(records, output, status=status, seconds=seconds, fast=args.fast), encoding="utf-8"
    )
    print(f"wrote {args.output} ({len(records)} records)")
    return status


if __name__ == "__main__":
    sys.exit(main())
