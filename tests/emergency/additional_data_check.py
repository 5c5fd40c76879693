"""A check of an emergency INVITE's RFC 7852 Additional Data, independent of the builder.

Every ``Call-Info`` with an ``EmergencyCallData.*`` purpose must name, by ``cid:``, a
body part of the same INVITE whose Content-Type is the block's media type and whose
XML parses (xml.etree) to the block's root element in its namespace, with a
DataProviderReference first (RFC 7852 sections 4 and 6).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tests.emergency.pidf_check import split_multipart

NS_ECD = "urn:ietf:params:xml:ns:EmergencyCallData"
NS_VCARD = "urn:ietf:params:xml:ns:vcard-4.0"
#: The media types of the blocks the gateway sends (RFC 7852 section 11.1).
ADDITIONAL_DATA_TYPES = frozenset(
    f"application/emergencycalldata.{b.lower()}+xml"
    for b in ("ProviderInfo", "ServiceInfo", "DeviceInfo", "SubscriberInfo")
)
_CALL_INFO_RE = re.compile(r"<cid:([^>]+)>\s*;\s*purpose=(EmergencyCallData\.(\w+))")


def additional_data_blocks(
    content_type: str, body: bytes, call_info: list[str]
) -> dict[str, ET.Element]:
    """Block name ("ServiceInfo") -> its parsed root, after checking the references.

    Args:
        content_type: the INVITE's Content-Type.
        body: its body.
        call_info: its Call-Info header values.

    Raises:
        AssertionError: a reference without its part, a wrong type, bad XML.
    """
    parts = split_multipart(content_type, body)
    by_cid = {
        h["content-id"].strip("<>"): (t, h, b) for t, (h, b) in parts.items() if "content-id" in h
    }
    blocks: dict[str, ET.Element] = {}
    for value in call_info:
        match = _CALL_INFO_RE.fullmatch(value.strip())
        if match is None:
            continue
        cid, purpose, block = match.groups()
        assert cid in by_cid, (value, list(by_cid))
        part_type, headers, body = by_cid[cid]
        assert part_type == f"application/{purpose}+xml".lower(), (part_type, purpose)
        # RFC 5621 / RFC 7852: referenced from a header, optional to a UA.
        assert headers.get("content-disposition", "").replace(" ", "").startswith("by-reference"), (
            headers
        )
        root = ET.fromstring(body)
        assert root.tag == f"{{{NS_ECD}:{block}}}{purpose}", root.tag
        assert root[0].tag == f"{{{NS_ECD}:{block}}}DataProviderReference", root[0].tag
        assert block not in blocks, f"{block} twice"
        blocks[block] = root
    return blocks


def text(root: ET.Element, block: str, element: str) -> str | None:
    """The text of a block's child element."""
    return root.findtext(f"{{{NS_ECD}:{block}}}{element}")
