from edgekit.inventory import Node
from edgekit.remote.probe import decode_throttled, judge, parse_probe

NODE = Node(name="pi1", host="127.0.0.1")
PI4 = {
    "model": "Raspberry Pi 4 Model B Rev 1.4", "arch": "aarch64", "long_bit": "64",
    "cores": "4", "features": " fp asimd evtstrm crc32 cpuid", "mem_total_kb": "3884000",
    "mem_avail_kb": "3500000", "disk_free_kb": "20000000", "python": "3.11.2",
    "temp_mc": "48300", "cur_freq_khz": "1500000", "max_freq_khz": "1500000",
    "throttled": "0x0", "vcgencmd": "yes",
}


def test_healthy_pi4_is_ready() -> None:
    rep = judge(NODE, PI4)
    assert rep.ready and rep.verdict == "ready"
    assert rep.simd == ["asimd"] and rep.cores == 4 and rep.temp_c == 48.3


def test_32_bit_node_is_refused_for_serving() -> None:
    rep = judge(NODE, {**PI4, "arch": "armv7l", "long_bit": "32"})
    assert not rep.ready
    assert "32-bit" in rep.verdict and "64-bit Raspberry Pi OS" in rep.verdict


def test_small_ram_old_python_and_no_python() -> None:
    assert "RAM available" in judge(NODE, {**PI4, "mem_avail_kb": "200000"}).verdict
    assert "older than 3.11" in judge(NODE, {**PI4, "python": "3.9.2"}).verdict
    assert "no python3" in judge(NODE, {**PI4, "python": ""}).verdict


def test_throttle_bits_decode_and_warn() -> None:
    assert decode_throttled(0x50005) == [
        "under-voltage", "throttled", "under-voltage-occurred", "throttled-occurred"
    ]
    rep = judge(NODE, {**PI4, "throttled": "0x50005", "temp_mc": "82000"})
    assert rep.ready  # hot or under-voltage is a warning, not a refusal
    assert any("under-voltage" in w for w in rep.warnings)
    assert any("hot" in w for w in rep.warnings)
    assert judge(NODE, {**PI4, "throttled": "garbage"}).warnings


def test_parse_probe_ignores_noise() -> None:
    assert parse_probe("a=1\nnoise\nb = 2\nmodel=Raspberry Pi=x\n") == {
        "a": "1", "model": "Raspberry Pi=x"
    }


def test_systemd_counts_only_with_a_user_manager_that_answers() -> None:
    assert judge(NODE, {**PI4, "systemd": "yes", "systemd_user": "running"}).systemd
    assert judge(NODE, {**PI4, "systemd": "yes", "systemd_user": "degraded"}).systemd
    assert not judge(NODE, {**PI4, "systemd": "no"}).systemd
    rep = judge(NODE, {**PI4, "systemd": "yes", "systemd_user": ""})
    assert rep.ready and not rep.systemd
    assert any("supervisor" in w for w in rep.warnings)


def test_aarch64_without_asimd_is_refused_naming_node_and_feature() -> None:
    rep = judge(NODE, {**PI4, "features": " fp evtstrm crc32 cpuid"})
    assert not rep.ready
    assert "pi1: the CPU lacks asimd" in rep.verdict and "NEON" in rep.verdict


def test_cpu_features_needed_only_on_aarch64_and_unknown_is_a_warning() -> None:
    pi5 = judge(NODE, {**PI4, "features": "fp asimd evtstrm aes crc32 asimddp"})
    assert pi5.ready and pi5.simd == ["asimd", "asimddp"]
    x86 = judge(NODE, {**PI4, "arch": "x86_64", "features": ""})
    assert x86.ready and not any("asimd" in w for w in x86.warnings)
    unknown = judge(NODE, {**PI4, "features": ""})
    assert unknown.ready and any("cannot confirm the CPU has asimd" in w for w in unknown.warnings)


def test_runtime_kernels_and_versions_and_the_numpy_fallback_warning() -> None:
    probe = parse_probe("native=neon-dotprod\nnative_problem=\nonnxruntime=1.32.0\nlitert=2.3.0\n")
    rep = judge(NODE, {**PI4, **probe})
    assert (rep.native, rep.onnxruntime, rep.litert) == ("neon-dotprod", "1.32.0", "2.3.0")
    assert not any("numpy" in w for w in rep.warnings)
    assert rep.to_dict()["onnxruntime"] == "1.32.0"
    rep = judge(NODE, {**PI4, "native": "numpy-fallback",
                       "native_problem": "libedgekit_native.so not in the install"})
    assert rep.ready  # slower, still correct: a warning, not a refusal
    assert "native library missing: numpy fallback (libedgekit_native.so not in the install)" \
        in rep.warnings
