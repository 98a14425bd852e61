"""Parsing an import's SOURCE: the three accepted forms, and one clear error otherwise."""

from __future__ import annotations

import pytest

from nixos_azure_publish.azure.importsource import ResolvedSource, parse_source, url_without_query
from nixos_azure_publish.errors import UsageError

VERSION_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rel"
    "/providers/Microsoft.Compute/galleries/g/images/nixos/versions/1.2.3"
)


def test_community_image_with_and_without_a_version():
    s = parse_source("/CommunityGalleries/nixos-1a2b/Images/nixos-25.05")
    assert (s.kind, s.gallery, s.image, s.version) == (
        "community",
        "nixos-1a2b",
        "nixos-25.05",
        None,
    )
    s = parse_source("/communitygalleries/nixos-1a2b/images/nixos-25.05/versions/LATEST")
    assert s.version is None
    s = parse_source("/CommunityGalleries/nixos-1a2b/Images/nixos-25.05/Versions/1.0.7")
    assert s.version == "1.0.7"
    assert s.image_ref == "/CommunityGalleries/nixos-1a2b/Images/nixos-25.05"


def test_gallery_version_id():
    s = parse_source(VERSION_ID)
    assert (s.kind, s.subscription, s.group, s.gallery, s.image, s.version) == (
        "gallery",
        "00000000-0000-0000-0000-000000000001",
        "rel",
        "g",
        "nixos",
        "1.2.3",
    )
    assert s.image_ref == VERSION_ID.rsplit("/versions/", 1)[0]
    assert parse_source(VERSION_ID.rsplit("/versions/", 1)[0]).version is None


def test_url_keeps_its_query_but_never_shows_it():
    s = parse_source("https://acct.blob.core.windows.net/c/disk.vhd?sv=2024&sig=SECRET")
    assert s.kind == "url"
    assert s.image_ref == "https://acct.blob.core.windows.net/c/disk.vhd"
    assert url_without_query("https://h/p?sig=x#f") == "https://h/p"


@pytest.mark.parametrize(
    "text",
    [
        "http://example.org/disk.vhd?sig=SECRET",
        "nixos-25.05",
        "/CommunityGalleries/x/Images/y/Versions/1.2",
        VERSION_ID.replace("1.2.3", "one"),
    ],
)
def test_anything_else_is_a_usage_error_without_secrets(text):
    with pytest.raises(UsageError) as info:
        parse_source(text)
    assert "SECRET" not in info.value.one_line()


def test_the_content_id_is_the_source_version():
    a = ResolvedSource(parse_source(VERSION_ID), "1.2.3", VERSION_ID, "V2", "x64", "Standard")
    b = ResolvedSource(
        parse_source(VERSION_ID.upper().replace("/VERSIONS/", "/versions/")),
        "1.2.3",
        VERSION_ID,
        "V2",
        "x64",
        "Standard",
    )
    c = ResolvedSource(parse_source(VERSION_ID), "1.2.4", VERSION_ID, "V2", "x64", "Standard")
    assert a.content_hash == b.content_hash != c.content_hash
    assert len(a.content_hash) == 32
    assert a.storage_profile() == {"source": {"id": VERSION_ID}}
