"""Dynamic instruction counts of the NEON linear kernels under qemu (Pi 4 = cortex-a72 path
"neon", Pi 5 = cortex-a76 path "neon-dotprod"): dense vs 2:4 vs 1:4 on one shape, and
instructions per multiply-accumulate. Needs qemu-user and gcc-aarch64-linux-gnu.
Run: .venv/bin/python benchmarks/kernels_qemu_count.py [ROWS NOUT KIN]"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[1] / "native"


def ranges(exe: Path, prefix: str) -> list[tuple[int, int]]:
    out = subprocess.run(["aarch64-linux-gnu-nm", "-S", str(exe)], capture_output=True, text=True,
                         check=True).stdout
    res = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].startswith(prefix):
            res.append((int(parts[0], 16), int(parts[0], 16) + int(parts[1], 16)))
    return res


def count(exe: Path, cpu: str, pattern: str, shape: list[str], prefix: str, tmp: Path) -> int:
    log = tmp / "exec.log"
    subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-cpu", cpu, "-singlestep",
                    "-d", "nochain,exec", "-D", str(log), str(exe), "count", pattern, *shape],
                   check=True, capture_output=True)
    spans = ranges(exe, prefix)
    n = 0
    pat = re.compile(r"/([0-9a-f]{16})/")
    with open(log) as fh:
        for line in fh:
            m = pat.search(line)
            if m:
                a = int(m.group(1), 16)
                n += any(lo <= a < hi for lo, hi in spans)
    log.unlink()
    return n


def main() -> None:
    shape = sys.argv[1:4] or ["8", "16", "512"]
    rows, nout, kin = (int(v) for v in shape)
    with tempfile.TemporaryDirectory(prefix="ek-count-") as tmpd:
        tmp = Path(tmpd)
        subprocess.run(["make", "-s", "-C", str(NATIVE), "ARCH=aarch64", f"BUILD={tmp}",
                        f"{tmp}/test_native"], check=True)
        exe = tmp / "test_native"
        out = {}
        for cpu, prefix, board in (("cortex-a72", "neon_k_", "Pi 4"),
                                   ("cortex-a76", "dot_k_", "Pi 5")):
            res = {p: count(exe, cpu, p, shape, prefix, tmp) for p in ("1:1", "2:4", "1:4")}
            macs = rows * nout * kin  # dense-equivalent MACs
            out[board] = {"cpu": cpu, "instructions": res,
                          "ratio_2:4": res["2:4"] / res["1:1"],
                          "ratio_1:4": res["1:4"] / res["1:1"],
                          "dense_instr_per_mac": res["1:1"] / macs}
            print(f"{board} ({cpu}): dense {res['1:1']}, 2:4 {res['2:4']} "
                  f"({res['2:4'] / res['1:1']:.3f}x), 1:4 {res['1:4']} "
                  f"({res['1:4'] / res['1:1']:.3f}x); "
                  f"dense {macs / res['1:1']:.2f} MACs/instruction")
        print(json.dumps({"shape": [rows, nout, kin], **out}))


if __name__ == "__main__":
    main()
