"""ISO URLs without a network: what validation accepts is exactly what the downloader can
parse (one function, :func:`bkt_vm_plugin.paths.parse_url`, decides both), and no message
shows a password."""

from __future__ import annotations

import http.client
import urllib.request
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bkt_vm_plugin.iso import FetchFailed, FetchResult, redact
from bkt_vm_plugin.paths import iso_url_file_name, parse_url


def urls() -> st.SearchStrategy[str]:
    """Valid ISO URLs: host names, IPv4 and [IPv6] addresses, ports, paths, queries."""
    label = st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True)
    host = st.one_of(
        st.lists(label, min_size=1, max_size=3).map(".".join),
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    )
    port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
    segment = st.from_regex(r"[A-Za-z0-9_%-][A-Za-z0-9._%-]{0,9}", fullmatch=True)
    query = st.one_of(st.just(""), st.from_regex(r"\?[a-z0-9=&]{0,8}", fullmatch=True))
    return st.builds(
        lambda scheme, h, p, parts, q: f"{scheme}://{h}{p}/{'/'.join(parts)}{q}",
        st.sampled_from(["http", "https", "HTTP", "Https"]),
        host,
        port,
        st.lists(segment, min_size=1, max_size=3),
        query,
    )


#: Characters that make URLs interesting to a parser.
URLISH = st.text(alphabet="ahtps:/[]@.0123456789f-_~%?# \t\u00e9", max_size=30)


def downloader_parses(url: str) -> None:
    """What urllib and http.client do with a URL before they send a byte: every step that
    raises on a malformed URL (none of them connects)."""
    request = urllib.request.Request(url)
    connection = http.client.HTTPConnection(request.host)
    try:
        assert 1 <= connection.port <= 65535
        connection.host.encode("idna")  # what the resolver is given
        connection.putrequest("GET", request.selector)
    finally:
        connection.close()


@given(st.one_of(urls(), URLISH.map(lambda t: "http://" + t), URLISH))
@example("http://[::1/x.iso")
@example("http://[::1]x/x.iso")
@example("http://example.org:99999/x.iso")
@example("http://example.org:x/x.iso")
@example("http://:80/x.iso")
@example("http://a..b/x.iso")
@example("http://example.org/\u00e9.iso")
@example("http://u:p@example.org/x.iso")
def test_validation_accepts_exactly_what_the_downloader_can_parse(url: str) -> None:
    try:
        iso_url_file_name(url)
    except ValueError:
        return
    downloader_parses(url)


@given(urls())
def test_valid_urls_are_accepted(url: str) -> None:
    # Strict, but not stricter than the downloader: every URL it fetches is accepted.
    assert iso_url_file_name(url) == url.split("?")[0].rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1/x.iso", "URL has an [IPv6] address without its closing ]"),
        ("http://[::1]x/x.iso", "URL must have nothing but :port after its [IPv6] address"),
        ("http://[fe80::1%25eth0]/x.iso", "URL must not have a zone in its IPv6 address"),
        ("http://[::g]/x.iso", "URL has an invalid IPv6 address in brackets"),
        ("http://example.org:99999/x.iso", "URL port must be a number from 1 to 65535"),
        ("http://example.org:0/x.iso", "URL port must be a number from 1 to 65535"),
        ("http://example.org:8o/x.iso", "URL port must be a number from 1 to 65535"),
        ("http://:80/x.iso", "URL has no host"),
        ("http:///x.iso", "URL has no host"),
        ("http://a..b/x.iso", "URL host must be a host name"),
        ("http://" + "a" * 64 + "/x.iso", "URL host must be a host name"),
        ("http://example.org/\u00e9.iso", "must be a URL of ASCII characters"),
        ("http://example.org/x.iso\x7f", "must be a URL without spaces or control characters"),
        ("http://user:secret@example.org/x.iso", "must not contain a user name or password"),
        ("ftp://example.org/x.iso", "must be an http:// or https:// URL"),
        ("http://example.org/" + "x" * 201, "file name must be at most 200 characters"),
    ],
)
def test_malformed_urls_are_refused_with_a_reason_that_never_quotes_them(
    url: str, reason: str
) -> None:
    with pytest.raises(ValueError) as caught:
        iso_url_file_name(url)
    assert reason in str(caught.value)
    assert "secret" not in str(caught.value)


def test_accepted_forms() -> None:
    # urllib reads a scheme in any case and an empty port as the default one.
    assert iso_url_file_name("HTTPS://Example.ORG:/a/x.iso") == "x.iso"
    assert parse_url("HTTPS://Example.ORG:/a/x.iso").hostname == "example.org"
    assert parse_url("http://[::1]:8080/x.iso").port == 8080
    assert parse_url("http://127.0.0.1/x.iso?t=1#f").path == "/x.iso"


def test_messages_never_show_credentials() -> None:
    assert redact("https://user:secret@example.org:8/a@b/x.iso") == (
        "https://***@example.org:8/a@b/x.iso"
    )
    assert redact("http://token@[::1/x.iso") == "http://***@[::1/x.iso"
    assert redact("http://a:b@c@host?q=@#@") == "http://***@host?q=@#@"
    assert redact("https://example.org/a@b.iso") == "https://example.org/a@b.iso"
    assert redact("not a url") == "not a url"

    url = "https://user:secret@example.org/x.iso"
    failed = FetchResult(url, Path("/c/x.iso"), "failed", error="e")
    for shown in (failed.describe(), str(failed.to_json()), FetchFailed("w", [failed]).message):
        assert "secret" not in shown and "***@example.org" in shown, shown
