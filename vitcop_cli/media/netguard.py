"""Which hosts ``vitcop serve`` may download remote media from (a guard against server-side request forgery).

Contract:

- :func:`refused_kind` ``(ip) -> str | None``: why an address must not be fetched from —
  ``"loopback"``, ``"unspecified"``, ``"link-local"``, ``"multicast"``, ``"shared (carrier-grade
  NAT)"`` (100.64.0.0/10), ``"site-local"``, ``"reserved"``, ``"private"`` or ``"non-public"``
  (anything else the ``ipaddress`` module does not call global: documentation and benchmarking
  ranges ...) — or ``None`` for a public address. IPv6 addresses
  that carry an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64
  ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) are refused when the IPv4 address inside is.
- :func:`parse_domain_patterns` ``(items) -> tuple[str, ...]``: the ``--allowed-media-domains`` values
  (each a comma list) as normalised patterns: an exact host name or IP address, or ``*.name`` for any
  host *under* ``name`` (not ``name`` itself). :class:`~vitcop_cli.errors.InputError` (one line) for
  a pattern that is not a host name. :func:`domain_allowed` ``(host, patterns)`` matches
  case-insensitively, ignoring a trailing dot.
- :class:`MediaHostGuard` ``(allowed_domains=(), allow_private=False)``: :meth:`~MediaHostGuard.check_url`
  checks a URL without any DNS look-up (scheme, credentials — refused, see :data:`CREDENTIALS_REFUSED` —,
  the domain list, and a host that is an address literal in any form ``inet_aton`` accepts:
  ``2130706433``, ``0x7f000001``, ``127.1``, ``0177.0.0.1``);
  :meth:`~MediaHostGuard.resolve` ``(host, port)`` checks the domain list, resolves the host once and
  returns the ``getaddrinfo`` entries, every one checked — the caller connects to those, so a second
  DNS answer cannot swap the address (see :mod:`vitcop_cli.media.pinned_http`). A name with *any* refused
  address is refused. ``allow_private=True`` skips the address check (the domain list still holds).
- Refusals raise :class:`MediaHostRefused` (an ``InputError``) with one line naming the host as
  given and the kind of address, never anything the remote host sent.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Iterable

from ..errors import InputError

__all__ = [
    "CREDENTIALS_REFUSED", "MediaHostGuard", "MediaHostRefused", "domain_allowed", "has_credentials",
    "parse_domain_patterns", "refused_kind",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT space
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_HINT = "the server fetches only public addresses unless started with --allow-private-media-hosts"
CREDENTIALS_REFUSED = "URLs with credentials (user:password@) are not supported"


def has_credentials(parts: urllib.parse.SplitResult) -> bool:
    """Whether a split URL carries a user name or password (``http://user:pw@host/``, ``http://user@host/``)."""
    return "@" in parts.netloc


class MediaHostRefused(InputError):
    """A remote media URL names (or redirects to) a host the server's policy refuses."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [v4 for v4 in found if v4 is not None]


def refused_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (see the module docstring), or ``None`` when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        for v4 in _embedded_ipv4(ip):
            kind = refused_kind(v4)
            if kind is not None:
                return kind
        if ip.ipv4_mapped is not None:
            return None  # judged by its IPv4 address alone (ipaddress calls ::ffff:0:0/96 reserved)
    checks = (
        ("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified), ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast), ("shared (carrier-grade NAT)", ip in _SHARED),
        ("site-local", getattr(ip, "is_site_local", False)), ("reserved", ip.is_reserved),
        ("private", ip.is_private), ("non-public", not ip.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def _normal_host(host: str) -> str | None:
    """``host`` lower-cased, without brackets or a trailing dot, IDNA-encoded; ``None`` if it cannot be."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    host = host[:-1] if host.endswith(".") else host
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return host if host and all(_LABEL.fullmatch(label) for label in host.split(".")) else None


def parse_domain_patterns(items: Iterable[str]) -> tuple[str, ...]:
    """Normalised ``--allowed-media-domains`` patterns; InputError for a bad one (see the module docstring)."""
    patterns = []
    for item in items:
        for raw in item.split(","):
            raw = raw.strip()
            if not raw:
                continue
            wildcard = raw.startswith("*.")
            host = _normal_host(raw[2:] if wildcard else raw)
            if host is None or "*" in raw[2 if wildcard else 0:] or (wildcard and _is_ip(host)):
                raise InputError(
                    f"--allowed-media-domains: {raw!r} is not a host name, an IP address or '*.' followed by a "
                    "host name (e.g. media.example.com,*.cdn.example.com)"
                )
            patterns.append(f"*.{host}" if wildcard else host)
    if not patterns:
        raise InputError("--allowed-media-domains is empty; give host names such as media.example.com,*.cdn.example.com")
    return tuple(dict.fromkeys(patterns))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def domain_allowed(host: str, patterns: Iterable[str]) -> bool:
    """True when ``host`` matches one of the (normalised) ``patterns``."""
    host = _normal_host(host)
    if host is None:
        return False
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and not _is_ip(host):
                return True
        elif host == pattern:
            return True
    return False


def _literal(host: str) -> IPAddress | None:
    """The address ``host`` spells in any numeric form ``getaddrinfo`` accepts (no DNS), else ``None``."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0]) if infos else None


@dataclass(frozen=True)
class MediaHostGuard:
    """The server's remote media policy: ``allowed_domains`` (empty: any host) and ``allow_private``."""

    allowed_domains: tuple[str, ...] = ()
    allow_private: bool = False

    def check_url(self, url: str) -> None:
        """Refuse ``url`` by its scheme, the domain list or an address-literal host; no DNS look-up."""
        try:
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise MediaHostRefused("the remote media URL is malformed; refused") from None
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise MediaHostRefused("remote media URLs must be http(s)://host/...; refused")
        if has_credentials(parts):
            raise MediaHostRefused(f"remote media URL for host {_shown(host)}: {CREDENTIALS_REFUSED}; refused")
        self._check_domain(host)
        if not self.allow_private:
            address = _literal(host)
            if address is not None:
                self._check_address(host, address)

    def resolve(self, host: str, port: int) -> list[tuple]:
        """The checked ``getaddrinfo`` entries to connect to for ``host:port`` (see the module docstring)."""
        self._check_domain(host)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not self.allow_private:
            for info in infos:
                self._check_address(host, ipaddress.ip_address(info[4][0].split("%", 1)[0]))
        return infos

    def _check_domain(self, host: str) -> None:
        if self.allowed_domains and not domain_allowed(host, self.allowed_domains):
            raise MediaHostRefused(
                f"remote media host {_shown(host)} is not in the server's --allowed-media-domains; refused"
            )

    def _check_address(self, host: str, address: IPAddress) -> None:
        kind = refused_kind(address)
        if kind is None:
            return
        literal = _literal(host)
        article = "an" if kind[0] in "aeiou" else "a"
        what = f"is {article} {kind} address" if literal is not None else f"resolves to {article} {kind} address"
        if literal is not None and _normal_host(host) != str(literal):
            what += f" ({literal})"
        raise MediaHostRefused(f"remote media host {_shown(host)} {what}; refused ({_HINT})")


def _shown(host: str) -> str:
    host = "".join(ch if ch.isprintable() else "?" for ch in host)
    return repr(host if len(host) <= 80 else host[:79] + "…")
