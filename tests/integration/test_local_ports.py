"""Ports for local servers, over real sockets on 127.0.0.1.

``free_port`` must not hand out ports the kernel also gives to outgoing
connections (a CI run lost the notifier to 'address already in use' when
WEB_PORT + 3 had been taken by a client connection), and ``up`` must refuse a
taken port with a clear error before it starts anything.
"""

from __future__ import annotations

import socket

import pytest

from services.cli.stack import WEB_PORT_OFFSETS, check_ports_free, service_ports
from services.kit.embedded import FREE_PORT_FLOOR, _ephemeral_low, free_port, port_is_free
from services.kit.settings import Settings, SettingsError

HOST = "127.0.0.1"


def listen_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, port))
    sock.listen()
    return sock


def test_free_ports_come_from_below_the_ephemeral_range_and_can_be_bound():
    low = _ephemeral_low()
    for _ in range(20):
        base = free_port(HOST, span=4)
        assert FREE_PORT_FLOOR <= base < low - 3
        servers = [listen_on(base + step) for step in range(4)]  # every port of the span binds
        for server in servers:
            server.close()


def test_a_listening_port_is_not_free_and_is_free_again_once_closed():
    port = free_port(HOST)
    server = listen_on(port)
    try:
        assert not port_is_free(HOST, port) and not port_is_free(HOST, port, reuse_address=True)
    finally:
        server.close()
    assert port_is_free(HOST, port, reuse_address=True)


def test_up_names_every_taken_port_before_it_starts_anything():
    web, api = free_port(HOST, span=len(WEB_PORT_OFFSETS)), free_port(HOST)
    settings = Settings.from_env({"WEB_HOST": HOST, "WEB_PORT": str(web),
                                  "AUDIT_API_HOST": HOST, "AUDIT_API_PORT": str(api)})
    assert [port for _, _, port in service_ports(settings)] == [web, web + 1, web + 2, web + 3, api]
    check_ports_free(settings)  # all free: no error
    notifier_port = web + WEB_PORT_OFFSETS["notifier"]
    servers = [listen_on(notifier_port), listen_on(api)]
    try:
        with pytest.raises(SettingsError) as raised:
            check_ports_free(settings)
    finally:
        for server in servers:
            server.close()
    message = str(raised.value)
    assert f"{HOST}:{notifier_port} (notifier)" in message and f"{HOST}:{api} (audit)" in message
    assert f"{HOST}:{web} (payments)" not in message and "WEB_PORT" in message


def test_a_port_handed_out_is_not_handed_out_again_before_it_is_bound():
    # A CI run lost refunds to 'address already in use': payments had been given the same port,
    # picked at random and not yet bound. Nothing here binds, so only free_port's memory keeps them apart.
    singles = [free_port(HOST) for _ in range(300)]
    spans = [free_port(HOST, span=len(WEB_PORT_OFFSETS)) for _ in range(100)]
    taken = singles + [base + step for base in spans for step in range(len(WEB_PORT_OFFSETS))]
    assert len(set(taken)) == len(taken)
