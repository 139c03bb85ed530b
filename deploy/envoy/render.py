#!/usr/bin/env python3
"""Render envoy.yaml.in (beside this file) into an Envoy configuration.

    python deploy/envoy/render.py --replica HOST:PORT [--replica HOST:PORT ...] \
        [--listen ADDRESS:PORT] [--admin-port PORT] [--max-concurrent-rpcs N] \
        [--upstream-ca CA.pem [--upstream-cert CERT.pem --upstream-key KEY.pem]] [-o FILE]

The template's only fields are the listen address and port, the admin port (the
admin API listens on 127.0.0.1 only), the replicas' addresses, and the circuit
breakers' sizes, which follow from the replicas: calls in flight at most the
replicas' --max-concurrent-rpcs summed (give the value the replicas run with;
scorewire's default is 256), calls waiting for a connection at most one replica's
worth; and, for replicas that serve TLS (--tls-cert), the CA Envoy trusts for them
and the certificate Envoy presents to them (replicas with --tls-client-ca). Everything
else is the shipped configuration as it is. Only the standard library is used, so
this runs with any Python 3.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().with_name("envoy.yaml.in")


def host_port(text: str, lowest_port: int = 1) -> tuple[str, int]:
    """'127.0.0.1:50051' or '[::1]:50051' → (address, port); an IP address, since
    the cluster is STATIC (no DNS lookups)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not lowest_port <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT: {text!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {host!r} (the cluster is STATIC)") from None
    return host, int(port)


def upstream_tls(ca: str, cert: str | None = None, key: str | None = None) -> str:
    """The cluster's transport socket for replicas that serve TLS: trust ``ca`` for
    their certificates; present ``cert``/``key`` to those that require one. Health
    checks go over it too."""
    lines = [
        "transport_socket:",
        "  name: envoy.transport_sockets.tls",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
        "    common_tls_context:",
        "      alpn_protocols: [h2]",
        f"      validation_context: {{ trusted_ca: {{ filename: {ca!r} }} }}",
    ]
    if cert is not None and key is not None:
        lines += [
            "      tls_certificates:",
            f"        - {{ certificate_chain: {{ filename: {cert!r} }}, private_key: {{ filename: {key!r} }} }}",
        ]
    return "".join(" " * 6 + line + "\n" for line in lines)


def render(
    replicas: list[tuple[str, int]],
    listen: tuple[str, int] = ("0.0.0.0", 8080),
    admin_port: int = 9901,
    max_concurrent_rpcs: int = 256,
    tls: str = "",
) -> str:
    """The configuration for these replicas, as text (``tls``: :func:`upstream_tls`'s)."""
    if not replicas:
        raise ValueError("at least one replica")
    if max_concurrent_rpcs < 1:
        raise ValueError("max_concurrent_rpcs must be positive")
    endpoints = ", ".join(
        f"{{ endpoint: {{ address: {{ socket_address: {{ address: {h!r}, port_value: {p} }} }} }} }}"
        for h, p in replicas
    )
    return Template(TEMPLATE.read_text()).substitute(
        LISTEN_ADDRESS=repr(listen[0]),
        LISTEN_PORT=listen[1],
        ADMIN_PORT=admin_port,
        ENDPOINTS=f"[ {endpoints} ]",
        MAX_REQUESTS=len(replicas) * max_concurrent_rpcs,
        MAX_PENDING_REQUESTS=max_concurrent_rpcs,
        UPSTREAM_TLS=tls,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", type=host_port, action="append", required=True,
                        metavar="ADDRESS:PORT", help="a scorewire replica (repeat for each)")
    parser.add_argument("--listen", type=lambda text: host_port(text, lowest_port=0), default=("0.0.0.0", 8080),
                        metavar="ADDRESS:PORT", help="where Envoy takes gRPC calls (default 0.0.0.0:8080; port 0: "
                        "Envoy picks one)")
    parser.add_argument("--admin-port", type=int, default=9901,
                        help="Envoy's admin API, on 127.0.0.1 (default 9901; 0: Envoy picks one)")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=256,
                        help="the replicas' --max-concurrent-rpcs (default 256, scorewire's default)")
    parser.add_argument("--upstream-ca", help="replicas serve TLS: the CA (PEM) that signed their certificates")
    parser.add_argument("--upstream-cert", help="replicas require client certificates: Envoy's (PEM)")
    parser.add_argument("--upstream-key", help="the private key of --upstream-cert (PEM)")
    parser.add_argument("-o", "--output", type=Path, help="write here (default: standard output)")
    args = parser.parse_args(argv)
    if (args.upstream_cert is None) != (args.upstream_key is None) or (args.upstream_cert and not args.upstream_ca):
        parser.error("--upstream-cert and --upstream-key go together, and need --upstream-ca")
    tls = upstream_tls(args.upstream_ca, args.upstream_cert, args.upstream_key) if args.upstream_ca else ""
    text = render(args.replica, args.listen, args.admin_port, args.max_concurrent_rpcs, tls)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
