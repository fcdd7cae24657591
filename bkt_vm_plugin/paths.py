"""What a manifest value may be when bkt writes it somewhere: a local path (``~`` expanded
with ``$HOME``; not a system file unless the VM allows it), an ISO URL the downloader can
fetch, text the domain XML can hold, and what a ``network`` value names.

Manifest validation (:mod:`bkt_vm_plugin.model`, :mod:`bkt_vm_plugin.rules`), sync, the
downloader and plugins share these rules. Nothing here imports pydantic.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable
    from urllib.parse import SplitResult

__all__ = [
    "BRIDGE_PREFIX",
    "CONTROL_MESSAGE",
    "MAX_FILE_NAME",
    "SYSTEM_DIRS",
    "expand_home",
    "has_control",
    "home_dir",
    "iso_url_file_name",
    "local_path_problem",
    "network_kind",
    "parse_url",
    "realpath_in",
    "system_path_problem",
    "xml_problem",
]

#: Why a value with a control character is refused.
CONTROL_MESSAGE = "must not contain control characters"
#: How a ``network`` value names a host bridge: ``bridge:NAME``.
BRIDGE_PREFIX = "bridge:"


def home_dir() -> str | None:
    """``$HOME`` when it is set and not empty: what ``~`` means in paths."""
    return os.environ.get("HOME") or None


def expand_home(path: str, home: str | None) -> str:
    """``path`` with ``~`` and ``~/...`` expanded with ``home`` (None: left as it is);
    ``~user`` is left as it is (and is then not absolute, which validation reports)."""
    if home is not None and (path == "~" or path.startswith("~/")):
        return posixpath.join(home, path[1:].lstrip("/"))
    return path


# The patterns here are compiled on first use (re keeps them compiled): a warm status or
# sync (its manifest from the cache of validated ones) checks no path, URL or XML text, and
# compiling them costs about 0.5 ms.
_CONTROL = "[\x00-\x1f\x7f-\x9f]"  # Unicode Cc
_SPACE_OR_CONTROL = "[\\s\x00-\x1f\x7f-\x9f]"


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (Unicode category Cc)."""
    return re.search(_CONTROL, text) is not None


#: A character that XML 1.0 cannot carry, even escaped: a C0 control other than tab, LF and
#: CR, a surrogate, U+FFFE or U+FFFF (the complement of its ``Char`` production). Written as
#: the characters it refuses: the complement of the ranges XML allows, spelled ``[^...]``,
#: costs every command (this module is on the status path) 3-4 ms to compile.
_NOT_XML = "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"


def xml_problem(text: str) -> str | None:
    """Why ``text`` cannot be written into the domain XML, if it cannot."""
    found = re.search(_NOT_XML, text)
    if found is None:
        return None
    if has_control(found.group()):
        return CONTROL_MESSAGE
    # Only here: the module that words characters brings pydantic with it.
    from bkt_core.jsonpos import char_repr

    return f"must not contain {char_repr(found.group())}, a character XML cannot hold"


def local_path_problem(path: str, home: str | None) -> str | None:
    """Why ``path`` cannot be a disk or ISO path, if it cannot (None when it can): control
    characters, or not absolute once ``~`` is expanded with ``home`` (None: ``$HOME`` is not
    set, so a path starting with ``~`` is refused)."""
    if has_control(path):
        return CONTROL_MESSAGE
    if path.startswith("~") and home is None:
        return "starts with ~ but HOME is not set"
    expanded = expand_home(path, home)
    if not expanded.startswith("/"):
        return f'must be an absolute path (after ~ expansion), not "{path}"'
    if ".." in expanded.split("/"):
        return 'must not contain ".."'
    return None


#: A host name or IPv4 address: what a URL's host may be outside brackets. Labels of 1 to 63
#: characters, as the resolver takes them.
_HOST_NAME = r"(?:[A-Za-z0-9_~-]{1,63}\.)*[A-Za-z0-9_~-]{1,63}\.?"
#: Longest file name an ISO URL may end in: the cache adds a digest and suffixes to it and
#: a file system allows 255 bytes.
MAX_FILE_NAME = 200


def parse_url(url: str) -> SplitResult:
    """``url`` split, when it is an http or https URL that ``bkt vm fetch-iso`` can fetch.

    Manifest validation and the downloader (for the manifest's URL and for every redirect)
    both call this, so that validation accepts exactly what the downloader can fetch and a
    malformed URL is reported at its place in the file, never by the HTTP library. Raises
    ``ValueError`` with the user-facing reason; the reason never quotes the URL, which could
    hold a password.
    """
    from urllib.parse import urlsplit

    if re.search(_SPACE_OR_CONTROL, url):
        raise ValueError("must be a URL without spaces or control characters")
    if not url.isascii():
        raise ValueError(
            "must be a URL of ASCII characters (percent-encode others, and write a host name "
            "in its xn-- form)"
        )
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    authority = re.split("[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        # The manifest is kept in git, and the downloader would not send them anyway.
        raise ValueError("must not contain a user name or password (user:password@)")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("URL has an [IPv6] address without its closing ]")
        host, after = authority[1:end], authority[end + 1 :]
        import ipaddress

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("URL has an invalid IPv6 address in brackets") from None
        if "%" in host:
            raise ValueError("URL must not have a zone in its IPv6 address")
    else:
        host = authority.split(":", 1)[0]
        after = authority[len(host) :]
        if not host:
            raise ValueError("URL has no host")
        if not re.fullmatch(_HOST_NAME, host):
            raise ValueError(
                "URL host must be a host name (labels of 1 to 63 letters, digits, '-', '_' "
                "or '~', between dots), an IPv4 address or an [IPv6] address"
            )
    if after and not after.startswith(":"):
        raise ValueError("URL must have nothing but :port after its [IPv6] address")
    port = after[1:]
    if port and not (len(port) <= 5 and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("URL port must be a number from 1 to 65535")
    try:
        return urlsplit(url)
    except ValueError:  # pragma: no cover - the checks above leave nothing it refuses
        raise ValueError("is not a valid URL") from None


def iso_url_file_name(url: str) -> str:
    """The file name ``url`` ends in (the last segment of its path). The ISO cache keeps the
    download under a name made from it (:func:`bkt_vm_plugin.iso.cache_name`).

    Raises ``ValueError`` with the user-facing reason when ``url`` cannot be an ISO source.
    """
    name = parse_url(url).path.rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise ValueError("URL must end in a file name (the ISO cache stores it under that name)")
    if len(name) > MAX_FILE_NAME:
        raise ValueError(f"URL's file name must be at most {MAX_FILE_NAME} characters")
    return name


def network_kind(network: str) -> tuple[Literal["network", "bridge", "user", "none"], str]:
    """What a ``network`` value means: a libvirt network, a host bridge, user-mode networking,
    or no interface."""
    if network == "none":
        return "none", ""
    if network == "user":
        return "user", ""
    if network.startswith(BRIDGE_PREFIX):
        return "bridge", network[len(BRIDGE_PREFIX) :]
    return "network", network


#: The host's own directories: a disk or ISO there is the system's file (``/etc/passwd``,
#: ``/proc/self/environ``), never a VM's, unless the VM says ``allow_system_paths``.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
)


def realpath_in(path: str, directories: dict[str, str]) -> str:
    """``os.path.realpath(path)``, with the real path of the directory of ``path`` (absolute)
    taken from ``directories`` when it is there, and kept there: the files of one directory
    resolve its links once, and each then costs one look at the file itself."""
    head, tail = posixpath.split(path)
    if not posixpath.isabs(path) or tail in ("", ".", ".."):
        return os.path.realpath(path)
    real = directories.get(head)
    if real is None:
        real = directories[head] = os.path.realpath(head)
    joined = posixpath.join(real, tail)
    # realpath resolves the directory, then the name in it: unless the name is a link
    # (resolved as realpath does), the real path is the real directory's entry.
    return os.path.realpath(path) if os.path.islink(joined) else joined


def system_path_problem(
    path: str,
    what: str,
    *,
    resolve: bool = True,
    realpath: Callable[[str], str] = os.path.realpath,
) -> str | None:
    """Why ``path`` (the file of a ``what``: "disk", "ISO") is refused as a system file, or
    None. Both the path as written and, with ``resolve``, where its symbolic links lead
    (``realpath``) are checked: a link in a VM's directory to ``/etc/shadow`` is
    ``/etc/shadow``."""
    written = posixpath.normpath(path)
    places = [written]
    if resolve:
        real = realpath(written)
        if real != written:
            places.append(real)
    for place in places:
        for top in SYSTEM_DIRS:
            if place == top or place.startswith(top + "/"):
                leads = "" if place == written else f" leads to {place}, which"
                return (
                    f"{what} {path}{leads} is in {top}, a system directory: bkt attaches no "
                    'file there to a VM unless the VM says "allow_system_paths": true'
                )
    return None
