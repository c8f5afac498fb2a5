"""The head's long-lived ports come from outside the kernel's ephemeral range, so a restarting
API or GCS never finds its port taken by some program's port-0 bind (edgekit.deploy.ports),
and a deploy's readiness check that meets another protocol on the API's port says so."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgekit.deploy import ports, verify


def test_free_ports_are_distinct_free_and_below_the_ephemeral_range():
    low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    got = ports.pick_free(4)
    assert len(set(got)) == 4
    assert all(ports.LOW <= p <= ports.HIGH < low_ephemeral for p in got)
    for p in got:  # each can be listened on now
        with socket.create_server(("", p)):
            pass


def test_a_taken_port_is_never_chosen():
    port = ports.pick_free(1)[0]
    # someone listens on it now
    with socket.create_server(("", port)), pytest.raises(OSError, match="fewer than 1 free"):
        ports.pick_free(1, port, port)
    assert ports.pick_free(1, port, port) == [port]  # free again


def test_the_head_node_runs_the_same_function_from_its_source():
    out = subprocess.run([sys.executable, "-", "3"], input=ports.remote_code(), text=True,
                         capture_output=True, check=True, timeout=30).stdout.split()
    assert len(set(out)) == 3 and all(ports.LOW <= int(p) <= ports.HIGH for p in out)


def test_readiness_check_names_a_port_that_answers_another_protocol():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def answer_http2() -> None:  # what a gRPC server (HTTP/2) sends an HTTP/1.1 client
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x40\x00")

    threading.Thread(target=answer_http2, daemon=True).start()
    try:
        h = verify.check(f"http://127.0.0.1:{port}", "token", ["m"])
    finally:
        srv.close()
    assert not h.ready and not h.answered
    assert "not with HTTP" in h.error and "another program may hold that port" in h.error
