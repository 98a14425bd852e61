"""What a publish did: the :class:`PublishReport`, as JSON, Markdown and a console summary.

The report is honest about work: what was reused and what was created, the
bytes actually sent against the image's data bytes, the time of each step,
and the replication state of every target region. Markdown goes to
``$GITHUB_STEP_SUMMARY`` (or ``--summary FILE``); JSON to stdout with ``--json``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import jinja2

from nixos_azure_publish import __version__
from nixos_azure_publish.redact import redact
from nixos_azure_publish.typedload import camel

TEMPLATES: Final = Path(__file__).resolve().parent / "report_templates"

Status = Literal["published", "already-published", "planned", "failed", "interrupted"]
Action = Literal[
    "created",
    "reused",
    "updated",
    "deleted",
    "exists",
    "would-create",
    "would-update",
    "would-delete",
    "kept",
]


@dataclass
class StepRecord:
    """One pipeline step: what it did and how long it took."""

    name: str
    status: Literal["done", "skipped", "failed", "planned"]
    seconds: float = 0.0
    detail: str = ""


@dataclass
class ResourceRecord:
    """An Azure resource the publish touched or would touch."""

    kind: str
    name: str
    action: Action
    id: str | None = None
    detail: str = ""


@dataclass
class UploadStats:
    """Bytes sent against bytes of data in the image."""

    file_size: int
    data_bytes: int
    bytes_sent: int
    ranges_sent: int = 0
    ranges_skipped: int = 0
    ranges_retried: int = 0
    seconds: float = 0.0
    verified: str = "none"

    @property
    def mib_per_second(self) -> float:
        """Throughput of the bytes actually sent."""
        return self.bytes_sent / (1024 * 1024) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RegionRecord:
    """Replication in one target region."""

    region: str
    state: str
    progress: int
    replicas: int | None = None
    storage_account_type: str | None = None
    details: str | None = None


@dataclass
class PublishReport:
    """Everything a user or CI needs to know about one publish."""

    target: str
    status: Status = "failed"
    dry_run: bool = False
    version: str | None = None
    version_id: str | None = None
    definition_id: str | None = None
    # What users of a community gallery boot: /CommunityGalleries/<public name>/Images/...
    community_image_id: str | None = None
    gallery: str | None = None
    resource_group: str | None = None
    image_file: str | None = None
    store_path: str | None = None
    store_hash: str | None = None
    flake_revision: str | None = None
    # An import's source: the gallery or community image, or the URL without its query,
    # "@" the source version.
    source: str | None = None
    file_size: int | None = None
    regions: list[RegionRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    resources: list[ResourceRecord] = field(default_factory=list)
    upload: UploadStats | None = None
    error: str | None = None
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    seconds: float = 0.0
    tool_version: str = __version__

    def resource(self, kind: str, name: str, action: Action, **kw: Any) -> None:  # noqa: ANN401
        """Record a resource, replacing an earlier record of the same one."""
        self.resources = [r for r in self.resources if (r.kind, r.name) != (kind, name)]
        self.resources.append(ResourceRecord(kind=kind, name=name, action=action, **kw))

    @property
    def created(self) -> list[ResourceRecord]:
        """Resources this run created."""
        return [r for r in self.resources if r.action == "created"]

    @property
    def reused(self) -> list[ResourceRecord]:
        """Resources that already existed and were used as they were."""
        return [r for r in self.resources if r.action in {"reused", "exists"}]

    @property
    def headline(self) -> str:
        """One line saying what happened."""
        where = f"{self.gallery}/{self.definition_name}" if self.gallery else self.target
        if self.status == "already-published":
            if self.version is None:
                return f"the upload disk of {self.target} already holds this image; nothing to do"
            return f"already published as {self.version} in {where}; nothing to do"
        if self.status == "published":
            if self.version is None:
                return f"uploaded {self.target} into its disk (no gallery configured)"
            return f"published {self.version} to {where}"
        if self.status == "planned":
            if self.version and any(
                r.kind == "image version" and r.name == self.version and r.action != "would-create"
                for r in self.resources
            ):
                changes = [r for r in self.resources if r.action.startswith("would-")]
                if not changes:
                    return f"dry run: already published as {self.version}; nothing would change"
                listed = ", ".join(
                    f"{r.action.removeprefix('would-')} {r.kind} {r.name}" for r in changes
                )
                return f"dry run: already published as {self.version}; would {listed}"
            return f"dry run: would publish {self.version or 'a new version'} to {where}"
        if self.status == "interrupted":
            return f"interrupted while publishing to {where}; run again to resume"
        return f"failed to publish to {where}: {self.error or 'unknown error'}"

    @property
    def definition_name(self) -> str | None:
        """The definition's name, from its id."""
        return self.definition_id.rsplit("/", 1)[-1] if self.definition_id else None

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (camelCase keys, as the rest of the tool speaks)."""
        raw = asdict(self)
        raw["headline"] = self.headline
        if self.upload is not None:
            raw["upload"]["mibPerSecond"] = round(self.upload.mib_per_second, 1)
        out: dict[str, Any] = _camel(raw)  # type: ignore[assignment]
        return out

    def to_markdown(self) -> str:
        """A Markdown summary (for ``$GITHUB_STEP_SUMMARY``)."""
        return _render("summary.md.j2", self)

    def to_console(self) -> str:
        """A short, readable summary for a terminal."""
        return _render("console.txt.j2", self)


RunStatus = Literal["published", "already-published", "planned", "failed", "interrupted"]


@dataclass
class RunReport:
    """Several targets published (or planned) in one run: each target's report, and the run's.

    The run's status: ``interrupted`` if any target was, else ``failed`` if any failed,
    else ``planned`` for a dry run, ``already-published`` when every target was, and
    ``published`` otherwise. Its exit code is the worst of the targets' (README, "Exit
    codes").
    """

    targets: list[PublishReport]
    codes: list[int]
    dry_run: bool = False
    seconds: float = 0.0
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    tool_version: str = __version__

    @property
    def exit_code(self) -> int:
        """The worst of the targets' exit codes."""
        from nixos_azure_publish.errors import worst_exit_code  # noqa: PLC0415

        return int(worst_exit_code(self.codes))

    @property
    def status(self) -> RunStatus:
        """What happened to the run as a whole."""
        states = {r.status for r in self.targets}
        if "interrupted" in states:
            return "interrupted"
        if "failed" in states or any(self.codes):
            return "failed"
        if self.dry_run:
            return "planned"
        if states == {"already-published"}:
            return "already-published"
        return "published"

    @property
    def uploads(self) -> int:
        """How many uploads the run made (targets that share an image share one)."""
        return sum(1 for r in self.targets if r.upload is not None)

    @property
    def headline(self) -> str:
        """One line for the whole run."""
        counts: dict[str, int] = {}
        for report in self.targets:
            counts[report.status] = counts.get(report.status, 0) + 1
        parts = ", ".join(f"{n} {status}" for status, n in counts.items())
        noun = "target" if len(self.targets) == 1 else "targets"
        dry = "dry run: " if self.dry_run else ""
        return f"{dry}{len(self.targets)} {noun}: {parts or 'none'}"

    def to_json(self) -> dict[str, Any]:
        """``{"targets": [<each target's report>], "status": ...}`` and the run's figures."""
        targets = []
        for report, code in zip(self.targets, self.codes, strict=True):
            data = report.to_json()
            data["exitCode"] = int(code)
            targets.append(data)
        return {
            "targets": targets,
            "status": self.status,
            "exitCode": self.exit_code,
            "headline": self.headline,
            "dryRun": self.dry_run,
            "uploads": self.uploads,
            "startedAt": self.started_at,
            "seconds": self.seconds,
            "toolVersion": self.tool_version,
        }

    def to_markdown(self) -> str:
        """A Markdown summary listing every target, then each target's own summary."""
        return _render("run_summary.md.j2", self)

    def to_console(self) -> str:
        """A line per target, then each target's own console summary."""
        return _render("run_console.txt.j2", self)


def _camel(value: object) -> object:
    if isinstance(value, dict):
        return {camel(str(k)): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":  # noqa: PLR2004
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"  # pragma: no cover


def _cell(value: object) -> str:
    """A Markdown table cell: no pipes or newlines."""
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=False,  # noqa: S701 - Markdown and plain text, not HTML
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters["size"] = _size
_ENV.filters["cell"] = _cell


def _render(name: str, report: PublishReport | RunReport) -> str:
    return redact(_ENV.get_template(name).render(r=report))
