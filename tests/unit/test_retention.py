"""Which versions retention deletes: pure selection, no Azure."""

from __future__ import annotations

import datetime as dt

from nixos_azure_publish.azure.retention import VersionInfo, select

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def v(name: str, day: int, *, ours: bool = True, eol_day: int | None = None) -> VersionInfo:
    return VersionInfo(
        name=name,
        id=f"/versions/{name}",
        ours=ours,
        published=dt.datetime(2026, 5, day, tzinfo=dt.UTC),
        end_of_life=dt.datetime(2026, 5, eol_day, tzinfo=dt.UTC) if eol_day else None,
    )


def names(doomed: list) -> list[str]:  # type: ignore[type-arg]
    return [d.name for d in doomed]


def test_keep_versions_keeps_the_newest_of_ours_and_never_touches_others():
    versions = [v("1.0.1", 1), v("1.0.2", 2), v("1.0.3", 3, ours=False), v("1.0.4", 4)]
    doomed = select(
        versions, keep_versions=2, delete_after_end_of_life=False, current="1.0.4", now=NOW
    )
    assert names(doomed) == ["1.0.1"]
    assert "newest 2" in doomed[0].reason


def test_the_current_version_is_kept_even_when_it_is_not_the_newest():
    versions = [v("1.0.1", 1), v("1.0.2", 2), v("1.0.3", 3)]
    doomed = select(
        versions, keep_versions=1, delete_after_end_of_life=False, current="1.0.1", now=NOW
    )
    assert names(doomed) == ["1.0.2", "1.0.3"]


def test_end_of_life_deletes_ours_past_their_date_but_not_the_current():
    versions = [
        v("1.0.1", 1, eol_day=20),
        v("1.0.2", 2, eol_day=31, ours=False),
        v("1.0.3", 3),
        v("1.0.4", 4, eol_day=2),
    ]
    doomed = select(
        versions, keep_versions=None, delete_after_end_of_life=True, current="1.0.4", now=NOW
    )
    assert names(doomed) == ["1.0.1"]
    assert "2026-05-20" in doomed[0].reason
    future = select(
        versions,
        keep_versions=None,
        delete_after_end_of_life=True,
        current="1.0.4",
        now=dt.datetime(2026, 5, 10, tzinfo=dt.UTC),
    )
    assert names(future) == []


def test_nothing_configured_deletes_nothing():
    versions = [v("1.0.1", 1, eol_day=2), v("1.0.2", 2)]
    assert (
        select(versions, keep_versions=None, delete_after_end_of_life=False, current=None, now=NOW)
        == []
    )
