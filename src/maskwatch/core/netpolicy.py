"""Where maskwatch may connect to or read from, on someone else's say-so: camera sources given through the
API and webhook targets. One guard for both (server-side request forgery, local file reads):

* a URL's scheme must be listed (cameras: ``rtsp``, ``rtsps``, ``http``, ``https`` by default; webhooks:
  ``http``, ``https``); ``webcam:N`` only when ``webcam`` is listed;
* its host must resolve to public addresses only: loopback, link-local (cloud metadata at 169.254.169.254),
  private, shared (CGNAT), multicast, reserved and unspecified addresses are refused unless the host name,
  the address or a network holding it is listed in ``hosts``. The *resolved* addresses are checked (a
  decimal ``2130706433`` or a name pointing at 127.0.0.1 is loopback like ``127.0.0.1``);
* a local path must lie, symlinks resolved, inside a listed folder (none listed: no local files); globs
  (``*``, ``?``, ``[``) are refused: one source, one file or folder.

A webhook sender connects to the very address it checked (:func:`check_url` returns them), so a name that
resolves elsewhere between the check and the connection (DNS rebinding) cannot reach a refused address. A
camera's source is checked each time it is written or enabled through the API; FFmpeg then resolves its host
again itself, so a name whose owner rebinds it later can still reach other addresses (cameras' names are
the operator's choice: list camera networks by address, not by name).

Pure standard library: the agent and the service can both use it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PORTS",
    "CheckedURL",
    "NetPolicy",
    "RefusedError",
    "Resolver",
    "check_path",
    "check_source",
    "check_url",
    "is_public",
    "parse_allowed",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``socket.getaddrinfo``'s signature (tests pass a resolver that answers differently on each call)
Resolver = Callable[..., Sequence[tuple[object, ...]]]

DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}
GLOB_CHARS = "*?["


class RefusedError(ValueError):
    """A URL or path the policy does not allow; the message says why (never with credentials)."""


def parse_allowed(entries: Iterable[str]) -> tuple[frozenset[str], tuple[Network, ...]]:
    """``hosts`` entries split into names (lower case) and networks (an address is a /32 or /128).
    ValueError for an entry that is neither a host name nor an address or network."""
    names: set[str] = set()
    networks: list[Network] = []
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            raise ValueError("an empty host entry")
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if "/" in entry or ":" in entry or any(c.isspace() for c in entry):
            raise ValueError(f"{raw!r} is neither a host name nor an address or network (CIDR)")
        names.add(entry)
    return frozenset(names), tuple(networks)


def is_public(address: Address) -> bool:
    """A globally routable unicast address (not loopback, link-local, private, shared, reserved, multicast or
    unspecified); an IPv4-mapped IPv6 address is judged as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class NetPolicy:
    """Allowed schemes, hosts (names, addresses, networks) and local folders."""

    schemes: frozenset[str]
    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    folders: tuple[Path, ...] = ()
    resolve: Resolver = field(default=socket.getaddrinfo, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        schemes: Iterable[str],
        hosts: Iterable[str] = (),
        folders: Iterable[str | Path] = (),
        *,
        resolve: Resolver | None = None,
    ) -> NetPolicy:
        names, networks = parse_allowed(hosts)
        return cls(
            frozenset(s.lower() for s in schemes),
            names,
            networks,
            tuple(Path(f).expanduser().resolve() for f in folders),
            resolve or socket.getaddrinfo,
        )

    def address_allowed(self, address: Address) -> bool:
        return is_public(address) or any(address in net for net in self.networks if net.version == address.version)


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the policy: its parts and the addresses its host resolved to (all allowed), in the
    resolver's order; connect to one of these, not to the name again."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def _addresses(host: str, port: int, policy: NetPolicy) -> tuple[str, ...]:
    try:
        literal: Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = policy.resolve(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise RefusedError(f"host {host!r} does not resolve") from exc
        found = []
        for info in infos:
            sockaddr = info[4]
            try:
                found.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))  # type: ignore[index]
            except ValueError:
                continue
        if not found:
            raise RefusedError(f"host {host!r} resolves to no address")
    for address in found:
        if not policy.address_allowed(address):
            raise RefusedError(
                f"host {host!r} resolves to {address}, a loopback, link-local, private or reserved address; "
                "list it in the allowed hosts to use it"
            )
    return tuple(dict.fromkeys(str(a) for a in found))


def check_url(url: str, policy: NetPolicy) -> CheckedURL:
    """The URL's scheme listed and its host allowed (every address it resolves to, unless the name itself is
    listed, when its addresses are returned unchecked); :class:`RefusedError` otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise RefusedError("not a valid URL (bad host or port)") from exc
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        raise RefusedError(
            f"scheme {scheme or '(none)'!r} is not allowed (allowed: {', '.join(sorted(policy.schemes))})"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise RefusedError("the URL has no host")
    port = port or DEFAULT_PORTS.get(scheme, 0)
    if host.lower() in policy.names:
        try:
            infos = policy.resolve(host, port, 0, socket.SOCK_STREAM)
            addresses = tuple(dict.fromkeys(str(i[4][0]) for i in infos))  # type: ignore[index]
        except (OSError, UnicodeError):
            addresses = ()
        return CheckedURL(scheme, host, port, addresses)
    return CheckedURL(scheme, host, port, _addresses(host, port, policy))


def check_path(raw: str, policy: NetPolicy) -> Path:
    """A local file or folder inside one of the policy's folders (symlinks resolved); :class:`RefusedError`
    otherwise. Existence is not checked here (the engine says "no such file")."""
    if not policy.folders:
        raise RefusedError("local files and folders are not allowed as camera sources (list folders to allow them)")
    resolved = Path(raw).expanduser().resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in policy.folders):
        raise RefusedError("the path is outside the allowed folders")
    return resolved


def check_source(uri: str, policy: NetPolicy) -> str:
    """A camera source from the API checked against ``policy``: ``webcam:N``, a URL, or a local path. Returns
    its kind (``webcam``, ``url``, ``path``); :class:`RefusedError` with the reason otherwise."""
    text = uri.strip()
    if not text or "\x00" in text or any(ord(c) < 32 for c in text):
        raise RefusedError("empty, or holds control characters")
    lower = text.lower()
    if lower.startswith("webcam:"):
        if "webcam" not in policy.schemes:
            raise RefusedError("webcam:N is not allowed (add 'webcam' to the allowed schemes)")
        return "webcam"
    if "://" in text:
        check_url(text, policy)
        return "url"
    if any(c in text for c in GLOB_CHARS):
        raise RefusedError("globs (*, ?, [) are not accepted: name one video file or one folder")
    check_path(text, policy)
    return "path"
