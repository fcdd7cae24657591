"""The character rule of :func:`bkt_vm_plugin.paths.xml_problem`, checked against XML 1.0's
``Char`` production over every code point."""

from __future__ import annotations

from bkt_vm_plugin.paths import xml_problem


def xml_char(code: int) -> bool:
    """XML 1.0's ``Char``: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
    [#x10000-#x10FFFF]."""
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def test_xml_problem_refuses_exactly_what_xml_cannot_carry() -> None:
    allowed = "".join(chr(c) for c in range(0x110000) if xml_char(c))
    refused = [chr(c) for c in range(0x110000) if not xml_char(c)]
    assert xml_problem(allowed) is None
    assert len(refused) == 2079
    assert [c for c in refused if xml_problem(f"a{c}b") is None] == []
