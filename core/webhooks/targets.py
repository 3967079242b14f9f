"""SSRF: where a webhook may send. A URL is http(s) with a host; every address its host resolves to
must be public (not loopback, private, link-local, multicast, reserved or unspecified; an IPv4 address
inside IPv6 is judged as IPv4) unless settings.webhook_allow_private_targets. The check runs when a
webhook is made and again before each attempt, and the attempt connects to the address that was
checked (the Host header and TLS name stay the URL's), so a name that re-resolves elsewhere between
the check and the connection (DNS rebinding) reaches nothing it was not allowed to."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = ("http", "https")


class UnsafeTarget(ValueError):
    """A URL that may not be sent to; the message says why and what would be valid."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address an attempt connects to."""
    url: str
    host: str          # as written in the URL (the Host header and the TLS server name)
    address: str       # the checked IP address connected to
    pinned_url: str    # url with its host replaced by address


def parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL without credentials; UnsafeTarget if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise UnsafeTarget(f"{url!r} has scheme {parts.scheme!r}; a webhook URL is http:// or https://")
    if not parts.hostname:
        raise UnsafeTarget(f"{url!r} has no host; give an absolute URL such as https://example.com/hook")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget(f"{url!r} carries credentials; a webhook is authenticated by its signature, "
                           "not by user:password in the URL")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not public, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "unspecified", "link_local", "private", "multicast", "reserved"):   # most telling first
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (one for an IP literal)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeTarget(f"host {host!r} does not resolve ({exc}); give a host name with a public address")
    return list(dict.fromkeys(info[4][0] for info in infos))


def check(url: str, allow_private: bool) -> Target:
    """The URL's target if every address of its host may be sent to; UnsafeTarget naming the address otherwise."""
    _, host, port = parse(url)
    addresses = resolve(host, port)
    if not allow_private:
        for address in addresses:
            why = _forbidden(ipaddress.ip_address(address.split("%", 1)[0]))
            if why is not None:
                raise UnsafeTarget(f"host {host!r} resolves to {address}, which is {why}; webhooks are sent "
                                   "only to public addresses (an operator may allow private ones with "
                                   "CHAINRULE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true)")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    parts = urlsplit(url)
    netloc = f"{literal}:{port}"
    return Target(url, host, address, parts._replace(netloc=netloc).geturl())
