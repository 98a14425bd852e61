"""Load a publish target from a flake: ``azurePublish.<target>``, validated, its image built.

The flake declares data, the tool reads it (as deploy-rs does):
``nix eval --json <flake>#azurePublish.<target>`` gives the target, the
config model validates it, ``nix build`` builds its ``image`` attribute, and
the one ``*.vhd`` in the output is the file to publish. ``--image PATH``
skips the build; ``--config FILE`` skips Nix entirely (not handled here).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish import config, nix
from nixos_azure_publish.errors import ConfigError, ImageError, NixError, UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)

ATTRIBUTE: Final = "azurePublish"
# The revision of the flake, for when the flake reference itself cannot tell it
# (``nix run .#publish`` hands the publisher a store path; lib.mkPublishApp sets this).
REVISION_ENV: Final = "NIXOS_AZURE_PUBLISH_FLAKE_REVISION"

_PLAIN_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")

# Applied to the target attribute: says whether `image` is a derivation (to build) or
# a path (to use), and, with --image, leaves `image` out so nothing is instantiated.
_PROBE: Final = (
    "skipImage: t: if builtins.isAttrs t then {"
    ' config = if skipImage then builtins.removeAttrs t [ "image" ] else t;'
    ' imageIsDerivation = !skipImage && (t.image.type or null) == "derivation";'
    " } else { config = t; imageIsDerivation = false; }"
)


@dataclass(frozen=True)
class LoadedTarget:
    """A validated target and the image file to publish."""

    target: PublishTarget
    image_path: Path | None
    store_path: str | None
    flake_revision: str | None


def attr_path(*parts: str) -> str:
    """A Nix attribute path, quoting the parts that need it (``azurePublish."gen.2"``)."""
    out = []
    for part in parts:
        if _PLAIN_ATTR.match(part):
            out.append(part)
        elif '"' in part or "\\" in part or "${" in part:
            raise UsageError(
                f"target name {part!r} cannot be used as a flake attribute",
                hint="Use letters, digits, '-', '_' and '.' in target names",
            )
        else:
            out.append(f'"{part}"')
    return ".".join(out)


def installable(flake: str, *parts: str) -> str:
    """``<flake>#<attr.path>``."""
    return f"{flake}#{attr_path(*parts)}"


def locate_vhd(path: Path) -> Path:
    """The VHD in an image output: *path* itself if a file, else its one ``*.vhd``.

    nixpkgs' Azure image names the file ``disk.vhd`` in older revisions and
    ``nixos-image-azure-<version>-<system>.vhd`` (``image.fileName``) in newer
    ones, so the directory is globbed rather than a name assumed.
    """
    if path.is_file():
        return path
    if not path.is_dir():
        _refuse_unusable(path)
        # A missing input is a usage error (exit 2), like every missing file.
        raise UsageError(
            f"the image {path} does not exist",
            hint="Check the path (a .vhd file, or a store path holding one); build the image"
            " first if it is a Nix output",
        )
    found = sorted(path.glob("*.vhd"))
    if len(found) == 1:
        return found[0]
    if not found:
        present = sorted(p.name for p in path.iterdir())
        listing = ", ".join(present[:8]) + (", ..." if len(present) > 8 else "")  # noqa: PLR2004
        raise ImageError(
            f"no .vhd file in the image output {path} (it holds: {listing or 'nothing'})",
            hint=(
                "Make the target's image the Azure image of a NixOS configuration"
                " (config.system.build.azureImage, as lib.mkTarget does), or pass --image PATH"
            ),
        )
    names = ", ".join(p.name for p in found)
    raise ImageError(
        f"{len(found)} .vhd files in the image output {path} ({names}); which one to publish"
        " is ambiguous",
        hint="Make the image attribute produce exactly one .vhd, or pass --image PATH to pick one",
    )


def _refuse_unusable(path: Path) -> None:
    """Say what *path* is when it exists but is neither a file nor a directory.

    A FIFO, a device or a symbolic link loop is there: "does not exist" would send
    the user looking for a file that they can see.
    """
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"the image {path} is a symbolic link loop",
                hint="Point the link at the image file, or pass the image's real path",
            ) from None
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise ImageError(
            f"the image {path} is not a regular file (a FIFO, socket or device)",
            hint="Pass the image file itself, or a store path holding one .vhd",
        )


def list_targets(flake: str) -> list[str]:
    """The names under ``azurePublish`` of *flake*."""
    names = nix.eval_json(installable(flake, ATTRIBUTE), apply="builtins.attrNames")
    if not isinstance(names, list):
        raise NixError(
            f"{flake}#{ATTRIBUTE} is not an attribute set of targets",
            hint="Declare targets as azurePublish.<name> = lib.mkTarget { ... }",
        )
    return [str(n) for n in names]


def _missing_target(flake: str, target: str, cause: nix.NixCommandError) -> NixError:
    """The error for a missing attribute while evaluating *target*: missing target or not.

    Nix says "attribute '...' missing" also for an attribute missing inside the target
    (``builtins.currentSystem`` in pure evaluation, a typo in a module): then the target
    is there, and Nix's own error is the one to show.
    """
    try:
        names = list_targets(flake)
    except nix.NixAttributeMissingError:
        return NixError(
            f"flake {flake} has no `{ATTRIBUTE}` output, so it declares no publish targets",
            hint=(
                f"Add {ATTRIBUTE}.{target} = lib.mkTarget {{ ... }} to the flake's outputs"
                " (see the template: nix flake init -t <this flake>)"
            ),
        )
    except NixError:
        return cause
    if target in names:
        return cause
    available = ", ".join(names) if names else "none"
    error = NixError(
        f"flake {flake} has no publish target {target!r}"
        f" (no attribute {attr_path(ATTRIBUTE, target)}); targets: {available}",
        hint="Pass --target with one of those names" if names else "Declare one with lib.mkTarget",
    )
    error.__cause__ = cause
    return error


def _probe(flake: str, target: str, *, skip_image: bool) -> dict[str, Any]:
    apply = f"({_PROBE}) {'true' if skip_image else 'false'}"
    try:
        probe = nix.eval_json(installable(flake, ATTRIBUTE, target), apply=apply)
    except nix.NixAttributeMissingError as error:
        raise _missing_target(flake, target, error) from None
    if not isinstance(probe, dict) or "config" not in probe:
        raise NixError(
            f"evaluating {installable(flake, ATTRIBUTE, target)} gave an unexpected result",
            hint="Report this as a bug, with the output of -v",
        )
    return probe


def _revision(flake: str, environ: Mapping[str, str]) -> str | None:
    try:
        metadata = nix.flake_metadata(flake)
    except NixError as error:
        log.debug("no revision for %s: %s", flake, error)
        metadata = {}
    revision = metadata.get("revision") or environ.get(REVISION_ENV) or None
    return str(revision) if revision else None


def load_flake_target(
    flake: str = ".",
    target: str = "default",
    *,
    image: Path | None = None,
    build: bool = True,
    need_image: bool = True,
    environ: Mapping[str, str] | None = None,
) -> LoadedTarget:
    """Evaluate, validate and (unless *build* is false or *image* is given) build a target.

    With ``build=False`` nothing is built: ``image_path`` is the VHD only when
    the image output already exists in the store, else None. With
    ``need_image=False`` the image is neither evaluated nor required (``status``,
    ``gc`` and ``import`` only need the destination).
    """
    env = os.environ if environ is None else environ
    if not flake or "#" in flake:
        raise UsageError(
            f"--flake takes a flake reference without an attribute, not {flake!r}",
            hint="Name the target with --target, e.g. --flake . --target default",
        )
    if not target:
        raise UsageError("--target must not be empty", hint="Pass --target NAME")
    source = installable(flake, ATTRIBUTE, target)
    probe = _probe(flake, target, skip_image=image is not None or not need_image)
    data = probe["config"]
    parsed = config.load_target(
        data, source=source, environ=env, image=str(image) if image is not None else None
    )
    if not need_image:
        return LoadedTarget(
            target=parsed, image_path=None, store_path=None, flake_revision=_revision(flake, env)
        )
    if parsed.image is None:
        problem = (
            "image: is not set, so there is nothing to publish; lib.mkTarget sets it from"
            " nixosConfiguration, or pass --image PATH"
        )
        raise ConfigError([problem], source=source)
    image_path: Path | None
    if image is not None:
        image_path = locate_vhd(image)
        store_path = nix.store_path_of(image_path.resolve(), environ=env)
    elif probe.get("imageIsDerivation"):
        store_path = parsed.image
        if build:
            built = nix.build(installable(flake, ATTRIBUTE, target, "image"))
            store_path = str(built)
            image_path = locate_vhd(built)
        elif Path(parsed.image).exists():
            image_path = locate_vhd(Path(parsed.image))
        else:
            log.info("not building %s (dry run); its image is not in the store yet", source)
            image_path = None
    else:
        # A path, not a derivation: Nix copied a path literal into the store already,
        # and a string names a file outside Nix.
        image_path = locate_vhd(Path(parsed.image))
        store_path = nix.store_path_of(image_path, environ=env)
    if image_path is not None:
        parsed = replace(parsed, image=str(image_path))
    revision = _revision(flake, env)
    log.info("target %s: image %s, revision %s", parsed.name, image_path, revision or "unknown")
    return LoadedTarget(
        target=parsed, image_path=image_path, store_path=store_path, flake_revision=revision
    )
