"""child() and children() find exactly the children whose tag equals the name asked for,
whichever way they scan: no namespaced element, comment or processing instruction, and
document order."""

from __future__ import annotations

import pytest

from bkt_vm_plugin.xmltree import child, children, parse_xml

DOC = (
    '<domain xmlns:q="urn:x"><!--name--><q:name>ns</q:name><?name pi?>'
    "<name>first</name><dev-ice>d</dev-ice><name>second</name>"
    '<other xmlns="urn:y"><name>deep</name></other><name2/></domain>'
)


def _by_comparison(tag: str) -> list[str | None]:
    return [c.text for c in parse_xml(DOC) if c.tag == tag]


@pytest.mark.parametrize("tag", ["name", "dev-ice", "{urn:x}name", "{urn:y}other", "other", "x"])
def test_children_are_the_children_whose_tag_equals_the_name(tag: str) -> None:
    domain = parse_xml(DOC)
    assert [c.text for c in children(domain, tag)] == _by_comparison(tag)
    found = child(domain, tag)
    expected = _by_comparison(tag)
    assert (found.text if found is not None else None) == (expected[0] if expected else None)


@pytest.mark.parametrize("tag", ["*", "{*}name", "{}name", "q:name"])
def test_wildcards_and_prefixes_match_nothing(tag: str) -> None:
    domain = parse_xml(DOC)
    assert children(domain, tag) == []
    assert child(domain, tag) is None


def test_no_parent_has_no_child() -> None:
    assert child(None, "name") is None
