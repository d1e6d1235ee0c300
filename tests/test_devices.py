"""Device and precision choices that depend on the machine."""
import pytest

from llm2clip.devices import cpu_has_native_bf16

FLAGS = "fpu vme de pse tsc msr avx2 avx512f"


@pytest.mark.parametrize("extra, expected", [("", False), (" amx_bf16 amx_tile", True), (" avx512_bf16", True),
                                             (" avx512bw", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {FLAGS}{extra}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(str(cpuinfo)) is expected


def test_no_cpuinfo_means_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False
