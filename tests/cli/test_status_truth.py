"""`edgekit status` tells the truth per node (issue 16): the version on disk against the one
the API's workers there serve, a mismatch flagged with what to do, the worker's load error,
what the last service start found damaged, temperature / throttling / drain / weight, and
the on-disk facts when the API cannot be reached. The pieces are pure (the API's real
/edgekit/status shape in, edgekit.deploy.truth, the table), so every combination is tested
here; tests/deploy/test_deploy_cluster.py checks them against a real killed deploy."""

from __future__ import annotations

from cli_screens import rows, screen

from edgekit.cli._deployview import status_view
from edgekit.deploy import truth, verify
from edgekit.deploy.report import DeployStatus

V5, V6 = "5" * 20, "6" * 20
INV = "/home/me/pis.txt"


def _api_status(drained: str = "pi2") -> dict:
    """The shape of the API's /edgekit/status (edgekit.serve.state.status) with the thermal
    controller: pi1 and pi2 live at V5, pi3's worker dead with a load error."""
    def row(node: str, temp: float, state: str, weight: float) -> dict:
        return {"node": node, "temp_c": temp, "throttled_now": state == "drained",
                "throttled_raw": "0x20002" if state == "drained" else "0x0", "state": state,
                "weight": weight, "stale": False, "age_s": 0.4,
                "reason": "drain: T at/above drain 78°C" if state == "drained" else "ok"}

    return {
        "models": {"cls": {"version": V5}},
        "replicas": [{"model": "cls", "nodes": ["pi1"], "alive": True, "generations": [0]},
                     {"model": "cls", "nodes": ["pi2"], "alive": True, "generations": [1]},
                     {"model": "cls", "nodes": ["pi3"], "alive": False, "generations": [4]}],
        "nodes": {"pi1": {"state": "serving", "weight": 1.0},
                  drained: {"state": "drained", "weight": 0.1},
                  "pi3": {"state": "serving", "weight": 1.0, "extra": {
                      "load_error": "ModelError: sha256 mismatch (expected 5555, got 6666)"}}},
        "load_errors": {"pi4": {"model": "cls", "version": V6, "error": "OSError: gone",
                                "t": 1.0}},
        "controllers": {"thermal": {"nodes": {
            "pi1": row("pi1", 51.5, "serving", 1.0), drained: row(drained, 81.0, "drained", 0.1),
            "pi3": row("pi3", 48.0, "serving", 1.0)}}},
    }


def _health(doc: dict) -> verify.Health:
    h = verify.Health(True)
    verify._read_status(h, doc)
    return h


def test_the_apis_status_read_per_node() -> None:
    h = _health(_api_status())
    assert h.served == {"pi1": {"cls": V5}, "pi2": {"cls": V5}}
    assert h.alive_nodes == {"pi1", "pi2"} and h.placed == {"pi1", "pi2", "pi3"}
    assert h.load_errors == {"pi3": "ModelError: sha256 mismatch (expected 5555, got 6666)",
                             "pi4": f"cls {V6}: OSError: gone"}
    assert h.routing["pi2"]["state"] == "drained" and h.thermal["pi2"]["temp_c"] == 81.0
    doc = _api_status()  # a replica that says its own version (a rolling update) wins
    doc["replicas"][0]["version"] = V6
    assert _health(doc).served["pi1"] == {"cls": V6}


def test_disk_ahead_of_the_workers_is_a_mismatch_with_a_fix() -> None:
    h = _health(_api_status())
    served = truth.served_versions(h, "pi1", ["cls"])
    what, fix = truth.mismatch({"cls": V6}, served, h, {"cls": V5}, INV)
    assert what == f"cls: on disk {V6[:12]}, but its workers serve {V5[:12]}"
    assert "edgekit deploy --nodes /home/me/pis.txt" in fix and f"--to {V5}" in fix
    assert truth.mismatch({"cls": V5}, served, h, {"cls": V5}, INV) == ("", "")


def test_a_node_without_a_live_worker_is_compared_with_what_the_api_serves() -> None:
    h = _health(_api_status())
    served = truth.served_versions(h, "pi3", ["cls"])
    assert served == {"cls": ""}
    what, _ = truth.mismatch({"cls": V6}, served, h, {"cls": V5}, INV)
    assert what == f"cls: on disk {V6[:12]}, but the API serves {V5[:12]} (no live worker here)"


def test_unreachable_api_compares_with_the_hosts_record() -> None:
    h = verify.Health(False, error="API not answering: refused", answered=False)
    served = truth.served_versions(h, "pi1", ["cls"])
    assert served == {"cls": None}
    what, _ = truth.mismatch({"cls": V6}, served, h, {"cls": V5}, INV)
    assert "the last finished deploy recorded" in what and "could not be asked" in what
    assert truth.mismatch({"cls": V5}, served, h, {"cls": V5}, INV) == ("", "")
    assert truth.thermal(h, "pi1") == {}


def test_thermal_view_and_boot_problem() -> None:
    h = _health(_api_status())
    th = truth.thermal(h, "pi2")
    assert th["drained"] and th["throttled_now"] and th["temp_c"] == 81.0
    assert th["weight"] == 0.1 and th["routing_weight"] == 0.1 and th["controller"]
    assert truth.thermal(h, "pi1")["throttled_since_boot"] is False
    assert truth.thermal(h, "ghost") == {}
    said = truth.boot_problem({"cls": {"version": V6, "ok": False, "problem": "x: sha256",
                                       "fell_back_to": V5}, "ok": {"ok": True}})
    assert said == f"cls: version {V6[:12]} damaged on disk at the last start (x: sha256); " \
                   f"fell back to {V5[:12]}"


def _status(h: verify.Health, on_disk: dict[str, str]) -> dict:
    """edgekit.deploy.ops.status's document for three reachable nodes, via its own _truth."""
    from edgekit.deploy.ops import _truth

    res = DeployStatus("status", head={"where": "host", "api_url": "http://127.0.0.1:8000"},
                       apps={"cls": {"version": V5, "plan": ["pi1", "pi2", "pi3"],
                                     "served_version": h.versions.get("cls", "")}},
                       api_ready=h.ready, api_error=h.error, api_reachable=h.answered)
    for name, disk in on_disk.items():
        r = res.node(name)
        r.active, r.kept = {"cls": disk}, {"cls": [V5, V6]}
        r.services, r.healthy = {"ray-worker": True}, name in h.alive_nodes
        _truth(r, h, {"cls": V5}, {}, INV)
    return res.to_dict()


def test_status_table_flags_the_mismatch_and_shows_thermal() -> None:
    st = _status(_health(_api_status()), {"pi1": V6, "pi2": V5, "pi3": V5})
    assert st["mismatch"] == ["pi1"] and st["nodes"]["pi1"]["served"] == {"cls": V5}
    for width in (80, 200):
        text = screen(status_view(st, {}), width)
        assert max(len(line) for line in text.splitlines()) <= width
        by_node = rows(text)
        assert by_node["pi1"].startswith("? mismatch version mismatch: cls: on disk")
        assert "drained: drain: T at/above drain 78°C" in by_node["pi2"]
        assert "worker cannot load the model: ModelError: sha256 mismatch" in by_node["pi3"]
        flat = " ".join(text.split())
        assert f"VERSION MISMATCH on pi1: cls: on disk {V6[:12]}" in flat
        assert "to fix: run the same `edgekit deploy" in flat
    wide = rows(screen(status_view(st, {}), 200))
    assert f"cls {V6[:12]} cls {V5[:12]}" in wide["pi1"]  # on disk, then served
    assert "81.0 drained 0.10 NOW" in wide["pi2"] and "51.5 serving 1.00 no" in wide["pi1"]


def test_status_table_without_the_api_shows_the_disk() -> None:
    h = verify.Health(False, error="cannot reach the API on host: refused", answered=False)
    st = _status(h, {"pi1": V6, "pi2": V5, "pi3": V5})
    text = screen(status_view(st, {}), 200)
    flat = " ".join(text.split())
    assert "the API cannot be reached (cannot reach the API on host: refused)" in flat
    assert f"cls {V6[:12]} cls ?" in rows(text)["pi1"]
    assert "the last finished deploy recorded" in rows(text)["pi1"]
    assert st["mismatch"] == ["pi1"] and not st["api_reachable"]
