"""How fast does `edgekit deploy` push a bundle, and what does a redeploy that changes nothing
cost? On a virtual cluster of 4 nodes, each in its own network namespace behind a veth shaped
to 1 Gbit/s (tbf here: this kernel has no sch_netem, docs/VIRTUAL-CLUSTER.md).

The bundle (about 50 MB) is made at run time: the real PP-OCR direction classifier
(edgekit.model.samples "ppocr-cls") plus random padding weights; nothing is committed.

Rows:
  bound      bytes x 8 / link rate: every node has its own link, so the parallel push can at
             best take one node's share; the sequential bound is 4 times that
  edgekit    the push step (edgekit.deploy.push.push_node: content-addressed SFTP upload,
             hashed on the node, version folder, atomic switch) to one node alone, then to
             all 4 nodes in parallel
  scp        a sequential loop of real OpenSSH `scp` of the same files to each node (the
             cluster's identity and known_hosts)
  no-change  what a second identical deploy does on the nodes before the services: the one
             survey round trip (probe + fingerprint + blob hashes on the node) and the push
             step given that survey (sends nothing)

    sudo .venv/bin/python benchmarks/deploy_push.py [--pad-mb 50] [--link 1gbit] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit import inventory, settings
from edgekit.deploy import bundle as bundle_mod
from edgekit.deploy import survey
from edgekit.deploy.layout import NodeLayout
from edgekit.deploy.push import Retention, push_node
from edgekit.model import samples
from edgekit.model.bundle import FORMAT_VERSION, Manifest, StageEntry, TensorEntry, write_bundle
from edgekit.remote.ssh import Pool
from edgekit.virtual.cluster import NodeSpec, VirtualCluster

RATES = {"1gbit": 1e9, "100mbit": 1e8}


def make_bundle(folder: Path, pad_bytes: int) -> bundle_mod.Bundle:
    model = samples.path("ppocr-cls")
    x = TensorEntry("x", "FP32", [-1, 3, 48, 192])
    y = TensorEntry("save_infer_model/scale_0.tmp_1", "FP32", [-1, 2])
    stage = StageEntry(0, "model.onnx", [x], [y], 8 * model.stat().st_size)
    manifest = Manifest(FORMAT_VERSION, "ppocr-cls", "1", "onnxruntime", [], [stage], [x], [y])
    pad = np.random.default_rng(0).standard_normal(pad_bytes // 4).astype(np.float32)
    write_bundle(folder, manifest, {"model.onnx": model, "pad.bin": pad.tobytes()},
                 overwrite=True)
    return bundle_mod.load(folder)


def roots(pool: Pool) -> dict[str, NodeLayout]:
    outs = pool.each(lambda c: c.run("printf %s \"$HOME\"", check=True).stdout)
    bad = {n: o.error for n, o in outs.items() if not o.ok}
    if bad:
        raise SystemExit(f"cannot reach: {bad}")
    return {n: NodeLayout(f"{o.value}/.edgekit") for n, o in outs.items()}


def push_all(pool: Pool, lays: dict[str, NodeLayout], b: bundle_mod.Bundle,
             seen: dict[str, survey.Survey] | None = None) -> tuple[float, int]:
    t0 = time.monotonic()
    outs = pool.each(lambda c: push_node(c, lays[c.node.name], b, Retention([], 2),
                                         seen=seen[c.node.name] if seen else None))
    took = time.monotonic() - t0
    bad = {n: o.error for n, o in outs.items() if not o.ok}
    if bad:
        raise SystemExit(f"push failed: {bad}")
    return took, sum(o.value.sent_bytes for o in outs.values() if o.value)


def no_change(pool: Pool, lays: dict[str, NodeLayout], b: bundle_mod.Bundle
              ) -> tuple[float, int]:
    blobs = [e.sha256 for e in (*b.files, bundle_mod.manifest_entry(b))]
    t0 = time.monotonic()
    outs = pool.each(lambda c: survey.check_and_survey(c, b.name, b.version, blobs))
    seen = {n: o.value[1] for n, o in outs.items() if o.value}
    _, sent = push_all(pool, lays, b, seen)
    return time.monotonic() - t0, sent


def scp_loop(vc: VirtualCluster, nodes: list[inventory.Node], b: bundle_mod.Bundle) -> float:
    files = [str(b.path / f.path) for f in b.files] + [str(b.path / "manifest.json")]
    base = ["scp", "-q", "-i", str(vc.identity_path), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={vc.known_hosts_path}", "-o", "StrictHostKeyChecking=yes"]
    t0 = time.monotonic()
    for n in nodes:
        port = ["-P", str(n.port)] if n.port and n.port != 22 else []
        subprocess.run([*base, *port, *files, f"{n.user}@{n.host}:"], check=True)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pad-mb", type=float, default=50.0)
    ap.add_argument("--link", default="1gbit", choices=sorted(RATES))
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ek-deploy-bench-"))
    os.environ["EDGEKIT_HOME"] = str(home)  # the cluster's known_hosts and identity live here
    settings.EDGEKIT_HOME = home
    specs = [NodeSpec("pi4", "fan"), NodeSpec("pi5", "fan"), NodeSpec("pi4", "fan"),
             NodeSpec("pi5", "fan")]
    try:
        b = make_bundle(home / "bundle" / "ppocr-cls", int(args.pad_mb * 1e6))
        nbytes = b.total_bytes + bundle_mod.manifest_entry(b).bytes
        with VirtualCluster.up(specs, home=home, link=args.link) as vc:
            nodes = list(inventory.load(vc.inventory_path))
            link = {s["name"]: s.get("link") for s in vc.status()}
            with Pool(nodes) as pool:
                lays = roots(pool)
                t_push, sent = push_all(pool, lays, b)
                # the same push to one node alone (a fresh root): one stream's ceiling here
                first = nodes[0].name
                solo = {first: NodeLayout(lays[first].root + "-solo")}
                with Pool([nodes[0]]) as one:
                    t_solo, _ = push_all(one, solo, b)
                t_noop, sent_noop = no_change(pool, lays, b)
            t_scp = scp_loop(vc, nodes, b)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    bound = nbytes * 8 / RATES[args.link]
    rows = [("bound, parallel (one link's share)", bound, nbytes * len(nodes)),
            ("bound, sequential (4 links in turn)", bound * len(nodes), nbytes * len(nodes)),
            ("edgekit push, 1 node alone", t_solo, nbytes),
            ("edgekit push, 4 nodes in parallel", t_push, sent),
            ("scp, sequential loop over 4 nodes", t_scp, nbytes * len(nodes)),
            ("edgekit no-change redeploy (survey + push)", t_noop, sent_noop)]
    print(f"bundle {nbytes / 1e6:.1f} MB to {len(nodes)} nodes, link {args.link} "
          f"(shaper: {sorted({str(v) for v in link.values()})})")
    print(f"{'':44} {'seconds':>8} {'MB sent':>8} {'x bound':>8}")
    for name, secs, sent_b in rows:
        print(f"{name:44} {secs:8.2f} {sent_b / 1e6:8.1f} {secs / bound:8.2f}")
    out = {"bundle_bytes": nbytes, "nodes": len(nodes), "link": args.link, "shaper": link,
           "bound_s": round(bound, 3), "edgekit_push_s": round(t_push, 3),
           "edgekit_sent_bytes": sent,
           "edgekit_push_one_node_s": round(t_solo, 3), "scp_sequential_s": round(t_scp, 3),
           "no_change_s": round(t_noop, 3), "no_change_sent_bytes": sent_noop}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
