"""The tegrastats parser on real lines from Jetson Orin and Thor (tests/data/tegrastats, sources in its README),
the summary (power, temperature, clock, throttling warnings) and the sampler."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.deploy import tegrastats as ts

DATA = Path(__file__).resolve().parent / "data" / "tegrastats"


def load(name: str) -> list[ts.Sample]:
    samples = ts.parse_file(DATA / name)
    assert samples, name
    return samples


def test_every_data_file_is_documented_and_parses_completely() -> None:
    readme = (DATA / "README.md").read_text()
    files = sorted(DATA.glob("*.log"))
    assert len(files) >= 6
    for f in files:
        assert f"`{f.name}`" in readme, f"{f.name} has no source in README.md"
        lines = [x for x in f.read_text().splitlines() if x.strip()]
        samples = ts.parse(lines)
        assert len(samples) == len(lines)
        for s in samples:
            assert s.time is not None and s.ram_total_mb and s.cpus and s.rails and s.temps


def test_orin_nano_jetpack6_under_load() -> None:
    (s,) = load("orin-nano-jp6-load.log")
    assert s.time is not None and (s.time.month, s.time.day, s.time.hour, s.time.second) == (5, 15, 18, 28)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (6982, 7620, 2640, 16384)
    assert len(s.cpus) == 6 and s.cpus[0] == ts.Core(97, 1984) and s.cpus[-1] == ts.Core(93, 247)
    assert (s.emc_load, s.emc_mhz) == (18, 3199)
    assert s.gpu_load == 84 and s.gpu_mhz == [713] and s.gpu_clock == 713
    assert s.temps["gpu"] == 63.5 and s.temps["tj"] == 65.562 and s.temps["cv2"] == 60.875 and len(s.temps) == 9
    assert s.rails == {"VDD_IN": ts.Rail(17946, 15710), "VDD_CPU_GPU_CV": ts.Rail(8896, 7585),
                       "VDD_SOC": ts.Rail(3923, 3515)}
    assert s.total_power() == (17.946, "VDD_IN")
    summary = ts.summarize([s], 1.0)
    assert summary["power_w"] == {"mean": 17.946, "max": 17.946, "source": "VDD_IN", "whole_module": True}
    assert summary["gpu_load_pct"] == {"mean": 84.0, "max": 84} and summary["gpu_clock_mhz"]["max"] == 713
    assert summary["temp_max_c"]["value"] == 65.562 and summary["warnings"] == []
    # 17.946 W for 2.0 ms per batch of 8 images: 4.4865 mJ per image
    assert ts.energy_per_image_mj(summary["power_w"]["mean"], 2.0, 8) == pytest.approx(4.4865)


def test_agx_orin_jetpack6_three_lines() -> None:
    samples = load("agx-orin-r36.4.4.log")
    assert len(samples) == 3 and len(samples[0].cpus) == 12
    assert samples[1].rails["VIN_SYS_5V0"] == ts.Rail(4607, 4657)
    assert samples[0].gpu_load == 0 and samples[0].gpu_mhz == [0, 0]  # two GPCs, idle (power-gated)
    assert "NVENC" not in samples[0].rails and samples[0].temps["soc1"] == 49.656
    s = ts.summarize(samples, 1.0)
    assert s["samples"] == 3 and s["duration_s"] == 3.0
    assert s["rails_w"]["VIN_SYS_5V0"]["mean"] == pytest.approx((4707 + 4607 + 4707) / 3000, abs=1e-3)
    assert s["power_w"]["source"] == "sum of rails" and not s["power_w"]["whole_module"]
    assert any("no whole-module rail" in w for w in s["warnings"])
    assert s["gpu_clock_mhz"]["busy_samples"] == 0 and not any("GPU clock varied" in w for w in s["warnings"])


def test_agx_orin_cores_off_and_three_value_power() -> None:
    (s,) = load("agx-orin-cores-off.log")
    assert [c.load for c in s.cpus[-4:]] == [None] * 4 and s.cpus[0] == ts.Core(78, 1728)
    assert s.rails["VDD_CPU_CV"] == ts.Rail(2643, 2643, 2643)
    assert s.temps["soc1"] == 49.0 and s.temps["tj"] == 50.718  # 'now/max' temperatures: the first is now


def test_agx_orin_powered_off_sensors_and_unconnected_rails() -> None:
    (s,) = load("agx-orin-idle-sensors-off.log")
    assert "gpu" not in s.temps and "cv0" not in s.temps  # -256C: the sensor is off, not a temperature
    assert s.temps["cpu"] == 44.562 and s.temps["tboard"] == 32.0  # upper-case names are normalised
    assert set(s.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}  # NC rails dropped


def test_thor_jetpack7_lines() -> None:
    old = load("thor-r38.4.0.log")
    assert len(old) == 3 and len(old[0].cpus) == 14
    assert old[0].gpu_load is None and old[0].gpu_mhz == [0, 0, 0]  # Thor prints no GPU load figure
    assert old[1].rails == {"VDD_GPU": ts.Rail(0, 0), "VDD_CPU_SOC_MSS": ts.Rail(4923, 4544),
                            "VIN_SYS_5V0": ts.Rail(4327, 4227)}
    assert old[0].temps == {"cpu": 34.468, "tj": 34.5, "soc012": 33.781, "soc345": 34.5}
    new = load("thor-r39.2.0.log")
    assert new[0].gpu_mhz == [314, 314, 314] and new[0].gpu_load is None
    assert new[1].rails["VDD_CPU_SOC_MSS"] == ts.Rail(7953, 8332, 8710) and new[1].temps["cpu"] == 34.312
    s = ts.summarize(new, 1.0)
    assert s["gpu_clock_mhz"] == {"min": 314, "max": 314, "mean": 314.0, "busy_samples": 2}
    assert s["power_w"]["mean"] == pytest.approx((4925 + 8710 + 6767 + 4925 + 7953 + 6667) / 2000, abs=1e-3)
    assert s["temp_max_c"] == {"sensor": "tj", "value": 35.906}


def test_warnings_for_clock_changes_heat_and_swap() -> None:
    busy = [ts.Sample(gpu_load=95, gpu_mhz=[918]), ts.Sample(gpu_load=97, gpu_mhz=[612])]
    s = ts.summarize(busy)
    assert any("GPU clock varied between 612 and 918 MHz" in w for w in s["warnings"])
    hot = ts.summarize([ts.Sample(temps={"tj": 96.5}, swap_used_mb=10), ts.Sample(swap_used_mb=300)])
    assert any("tj reached 96.5 C" in w for w in hot["warnings"])
    assert any("swap use grew from 10 to 300 MB" in w for w in hot["warnings"])
    assert ts.summarize([])["warnings"] == ["no tegrastats samples: no power, temperature or clock figures"]


def test_lines_that_are_not_tegrastats() -> None:
    assert ts.parse_line("") is None
    assert ts.parse_line("tegrastats: unrecognized option '--bogus'") is None
    assert ts.energy_per_image_mj(None, 1.0, 1) is None and ts.energy_per_image_mj(10.0, None, 8) is None


def _fake_tegrastats(tmp: Path) -> Path:
    """A stand-in executable for the sampler's mechanics only: it replays a real Orin Nano line."""
    line = (DATA / "orin-nano-jp6-load.log").read_text().strip()
    exe = tmp / "tegrastats"
    exe.write_text(f"#!/bin/sh\nwhile true; do echo '{line}'; sleep 0.05; done\n")
    exe.chmod(0o755)
    return exe


def test_sampler_collects_while_a_block_runs(tmp_path: Path) -> None:
    exe = _fake_tegrastats(tmp_path)
    with ts.Sampler(interval_ms=50, logfile=tmp_path / "log" / "t.log", executable=str(exe)) as sampler:
        deadline = time.monotonic() + 5
        while len(sampler.lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sampler._proc is None and len(sampler.samples()) >= 3
    assert (tmp_path / "log" / "t.log").read_text().count("VDD_IN") >= 3
    summary = sampler.summary()
    assert summary["available"] and summary["power_w"]["source"] == "VDD_IN"


def test_sampler_reports_absence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler = ts.Sampler()
    assert not sampler.available and "not found" in (sampler.reason or "")
    with sampler:
        pass
    assert sampler.summary() == {"samples": 0, "available": False, "reason": sampler.reason,
                                 "warnings": [sampler.reason]}


@pytest.mark.parametrize("present", [False, True])
def test_shell_wrap_samples_where_present_and_keeps_the_exit_status(tmp_path: Path, present: bool) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if present:
        _fake_tegrastats(bindir)
    log = tmp_path / "t.log"
    # the fake writes to stdout, so point --logfile's output there by wrapping it: the real tool writes the file
    if present:
        (bindir / "tegrastats").write_text(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --logfile ] && out=$2; shift; done\n"
            f"while true; do cat {DATA / 'orin-nano-jp6-load.log'} >> \"$out\"; sleep 0.05; done\n")
    script = ts.shell_wrap("sleep 0.3; exit 3", str(log), 50)
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"}
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only the group this test started
            proc.wait(timeout=10)
    assert proc.returncode == 3, err
    if present:
        assert len(ts.parse_file(log)) >= 2 and not Path(f"{log}.absent").exists()
    else:
        assert "tegrastats not found" in Path(f"{log}.absent").read_text() and not log.exists()


def test_module_needs_only_the_standard_library() -> None:
    code = ("import sys; import pipeline.deploy.tegrastats; "
            "bad = [m for m in ('numpy', 'torch', 'onnx') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
