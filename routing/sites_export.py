"""Writing the sites file (the inverse of :func:`routing.sites_file.parse_sites`).

Output is canonical: records sorted by id, networks by address, so exporting the same
data twice gives the same bytes and a diff between two exports shows real changes.
"""

from __future__ import annotations

import csv
import io
import json

from routing.sites_file import CSV_COLUMNS, SitesData


def dump_sites(data: SitesData, fmt: str) -> str:
    """Writes data as a sites file that :func:`parse_sites` reads back equal.

    Args:
        data: the data (written in canonical order).
        fmt: "toml" or "csv".

    Returns:
        The file text.
    """
    data = data.sorted()
    if fmt == "toml":
        return _dump_toml(data)
    if fmt == "csv":
        return _dump_csv(data)
    raise ValueError(f"unknown sites file format {fmt!r} (expected toml or csv)")


def _q(value: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also forbids a raw DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _dump_toml(data: SitesData) -> str:
    out: list[str] = ["# voipgw sites file (see routing/sites_file.py for the format)\n"]
    for c in data.customers:
        out.append(f"\n[[customers]]\nid = {_q(c.id)}\ncompany = {_q(c.company)}\n")
        out.append(f"state = {_q(c.state.value)}\nlanguage = {_q(c.language.value)}\n")
        if c.security_desk is not None:
            out.append(f"security_desk = {_q(c.security_desk)}\n")
    for s in data.sites:
        out.append(f"\n[[sites]]\nid = {_q(s.id)}\ncustomer = {_q(s.customer_id)}\n")
        out.append(f"name = {_q(s.name)}\nnetworks = [\n")
        for n in s.networks:
            out.append(f"  {{ cidr = {_q(str(n.cidr))}, kind = {_q(n.kind.value)} }},\n")
        out.append("]\n[sites.address]\n")
        for name, value in s.address.elements():
            out.append(f"{name} = {_q(value)}\n")
        out.append(f"lang = {_q(s.address.lang)}\n")
    for u in data.subscribers:
        out.append(f"\n[[subscribers]]\ne164 = {_q(u.e164)}\nsip_user = {_q(u.sip_user)}\n")
        out.append(f"customer = {_q(u.customer_id)}\n")
        if u.site_id is not None:
            out.append(f"site = {_q(u.site_id)}\n")
        out.append(f"presentation = {_q(u.presentation.value)}\n")
        out.append(f"display_name = {_q(u.display_name)}\nstate = {_q(u.state.value)}\n")
    for d in data.devices:
        out.append(f"\n[[devices]]\nid = {_q(d.id)}\nkind = {_q(d.kind.value)}\n")
        for key, opt in (("sip_user", d.sip_user), ("instance_id", d.instance_id),
                         ("user_agent", d.user_agent_pattern)):  # fmt: skip
            if opt is not None:
                out.append(f"{key} = {_q(opt)}\n")
    for e in data.centres:
        out.append(f"\n[[centres]]\nid = {_q(e.id)}\nname = {_q(e.name)}\n")
        out.append(f"sip_uri = {_q(e.sip_uri)}\nuri_style = {_q(e.uri_style.value)}\n")
        out.append(f"municipalities = [{', '.join(_q(m) for m in e.municipalities)}]\n")
        out.append(f"postal_prefixes = [{', '.join(_q(p) for p in e.postal_prefixes)}]\n")
        if e.secondary_id is not None:
            out.append(f"secondary = {_q(e.secondary_id)}\n")
        out.append(f"national_default = {'true' if e.national_default else 'false'}\n")
    for loc in data.declared:
        out.append(f"\n[[declared_locations]]\nid = {_q(loc.id)}\nsip_user = {_q(loc.sip_user)}\n")
        out.append(f"name = {_q(loc.name)}\n")
        out.append(f"networks = [{', '.join(_q(str(n)) for n in loc.networks)}]\n")
        out.append("[declared_locations.address]\n")
        for name, value in loc.address.elements():
            out.append(f"{name} = {_q(value)}\n")
        out.append(f"lang = {_q(loc.address.lang)}\n")
    for r in data.number_ranges:
        out.append(f"\n[[numbers]]\ncustomer = {_q(r.customer_id)}\nrange = {_q(r.text)}\n")
        out.append(f"roaming = {'true' if r.roaming else 'false'}\n")
    return "".join(out)


def _dump_csv(data: SitesData) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for c in data.customers:
        writer.writerow({"record": "customer", "id": c.id, "company": c.company,
                         "state": c.state.value, "language": c.language.value,
                         "security_desk": c.security_desk or ""})  # fmt: skip
    for s in data.sites:
        row = {"record": "site", "id": s.id, "customer": s.customer_id, "name": s.name}
        row.update(dict(s.address.elements()))
        row["lang"] = s.address.lang
        writer.writerow(row)
        for n in s.networks:
            writer.writerow({"record": "network", "site": s.id, "cidr": str(n.cidr),
                             "kind": n.kind.value})  # fmt: skip
    for u in data.subscribers:
        writer.writerow({"record": "subscriber", "e164": u.e164, "sip_user": u.sip_user,
                         "customer": u.customer_id, "site": u.site_id or "",
                         "presentation": u.presentation.value,
                         "display_name": u.display_name, "state": u.state.value})  # fmt: skip
    for d in data.devices:
        writer.writerow({"record": "device", "id": d.id, "kind": d.kind.value,
                         "sip_user": d.sip_user or "", "instance_id": d.instance_id or "",
                         "user_agent": d.user_agent_pattern or ""})  # fmt: skip
    for e in data.centres:
        writer.writerow({"record": "centre", "id": e.id, "name": e.name, "sip_uri": e.sip_uri,
                         "uri_style": e.uri_style.value,
                         "municipalities": "|".join(e.municipalities),
                         "postal_prefixes": "|".join(e.postal_prefixes),
                         "secondary": e.secondary_id or "",
                         "national_default": str(e.national_default).lower()})  # fmt: skip
    for loc in data.declared:
        row = {"record": "declared", "id": loc.id, "sip_user": loc.sip_user, "name": loc.name}
        row.update(dict(loc.address.elements()))
        row["lang"] = loc.address.lang
        writer.writerow(row)
        for cidr in loc.networks:
            writer.writerow({"record": "declared-network", "declared": loc.id, "cidr": str(cidr)})
    for r in data.number_ranges:
        writer.writerow({"record": "number", "customer": r.customer_id, "range": r.text,
                         "roaming": str(r.roaming).lower()})  # fmt: skip
    return buffer.getvalue()
