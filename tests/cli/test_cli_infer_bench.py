"""`edgekit infer` says "class k" only for a classifier's output; `edgekit bench` fails (exit 1,
a line saying why, `verdict` in --json) when requests errored or most were refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli._clientview import (
    EXIT_BENCH_FAILED,
    bench_verdict,
    entry_lines,
    is_probabilities,
    output_entry,
    read_labels,
)
from edgekit.errors import InputError
from edgekit.serve.loadgen import BenchReport


def test_softmax_output_is_read_as_classes() -> None:
    probs = np.array([[0.1, 0.7, 0.2]], np.float32)
    entry = output_entry("p", probs, 2, None)
    assert entry["kind"] == "classes" and [t["class"] for t in entry["top_k"]] == [1, 2]
    assert "class     1  0.7000" in "\n".join(entry_lines("p", entry))


@pytest.mark.parametrize("arr", [
    np.array([[3.2, -1.0, 0.5, 7.0]], np.float32),  # logits / regression: not probabilities
    np.array([[0.5, 0.9, 0.4]], np.float32),  # in [0, 1] but does not sum to 1
    np.array([[1.0]], np.float32),  # one value: a score, not classes
    np.arange(200, dtype=np.float32).reshape(1, 200) / 10,  # a [1, N] embedding
    np.array([[0.5, np.nan]], np.float32),
])
def test_other_1_by_n_outputs_are_tensors(arr: np.ndarray) -> None:
    entry = output_entry("y", arr, 5, None)
    assert entry["kind"] == "tensor" and "top_k" not in entry
    assert "class" not in "\n".join(line for line in entry_lines("y", entry)
                                    if not line.strip().startswith("(not"))


def test_big_tensor_summary_counts_nonfinite() -> None:
    arr = np.ones((1, 100), np.float32)
    arr[0, :3] = np.inf
    entry = output_entry("y", arr, 5, None)
    assert entry["min"] == entry["max"] == 1.0 and entry["nonfinite"] == 3
    assert "(3 NaN/Inf)" in "\n".join(entry_lines("y", entry))


def test_labels_make_a_classifier_and_must_match(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\n")
    names = read_labels(labels)
    logits = np.array([[0.3, 2.5, -1.0]], np.float32)
    entry = output_entry("logits", logits, 1, names)
    assert entry["top_k"] == [{"class": 1, "score": 2.5, "label": "dog"}]
    with pytest.raises(InputError, match="'logits' has 4 values but 3 labels"):
        output_entry("logits", np.zeros((1, 4), np.float32), 1, names)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="no labels") as exc:
        read_labels(empty)
    assert exc.value.where == str(empty)


def test_probabilities_rule() -> None:
    assert is_probabilities(np.array([[0.25, 0.75]], np.float64))
    assert not is_probabilities(np.array([[0.25, 0.75]], np.int64))
    assert not is_probabilities(np.array([[0.5, 0.5], [0.5, 0.5]], np.float32))


def _report(ok: int, refused: int, errors: int) -> dict:
    rep = BenchReport("m", "closed concurrency=4", 10.0)
    rep.ok, rep.refused, rep.errors = ok, refused, errors
    rep.latencies_ms = [5.0] * ok
    return rep.summary()


def test_bench_fails_when_most_requests_were_refused() -> None:
    v = bench_verdict(_report(ok=60, refused=940, errors=0), 0.5)
    assert not v["passed"] and v["refused_share"] == 0.94
    assert v["problems"] == ["94% of the requests were refused (503), more than "
                             "--max-refused 50%"]
    assert bench_verdict(_report(ok=600, refused=400, errors=0), 0.5)["passed"]
    assert not bench_verdict(_report(ok=600, refused=400, errors=0), 0.1)["passed"]


def test_bench_fails_on_any_error_or_nothing_answered() -> None:
    v = bench_verdict(_report(ok=999, refused=0, errors=1), 0.5)
    assert v["problems"] == ["1 of 1000 requests failed"]
    assert bench_verdict(_report(ok=0, refused=0, errors=0), 0.5)["problems"] == [
        "no request succeeded"]


def _cli(served, *args: str) -> subprocess.CompletedProcess[str]:
    proc, cluster = served
    tok = Path(proc.log).parent / "token-for-cli"
    tok.write_text(proc.token)
    tok.chmod(0o600)
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args, "--url", proc.url,
                           "--token-file", str(tok)], capture_output=True, text=True,
                          env=cluster.env(), timeout=180)


def test_cli_infer_classifier_and_plain_tensor(served, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32))
    r = _cli(served, "infer", "--model", "cls", "--input", str(x))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("class ") == 2  # PP-OCR's classifier: a softmax over 2 classes
    np.save(x, np.array([[1.0, 2.0, 3.0, 4.0]], np.float32))
    r = _cli(served, "infer", "--model", "affine", "--input", str(x), "--json")
    assert r.returncode == 0, r.stderr
    y = json.loads(r.stdout)["outputs"]["y"]
    assert y["kind"] == "tensor" and y["data"] == [[3.0, 5.0, 7.0, 9.0]] and "top_k" not in y
    r = _cli(served, "infer", "--model", "affine", "--input", str(x))
    assert "class" not in r.stdout and "[[3.0, 5.0, 7.0, 9.0]]" in r.stdout


def test_cli_bench_that_only_errors_fails(served) -> None:
    r = _cli(served, "bench", "--model", "boom", "--duration", "1", "--concurrency", "1",
             "--shape", "1,4", "--json")
    assert r.returncode == EXIT_BENCH_FAILED, r.stderr
    rep = json.loads(r.stdout)
    assert rep["errors"] > 0 and not rep["verdict"]["passed"]
    assert "requests failed" in rep["verdict"]["problems"][0]
    r = _cli(served, "bench", "--model", "boom", "--duration", "1", "--concurrency", "1",
             "--shape", "1,4")
    assert r.returncode == EXIT_BENCH_FAILED
    assert "FAILED:" in r.stdout and "requests failed" in r.stdout


def test_cli_bench_that_passes(served) -> None:
    r = _cli(served, "bench", "--model", "affine", "--duration", "1", "--concurrency", "1",
             "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["verdict"]["passed"] and rep["verdict"]["refused_share"] == 0.0
