"""dvit deploy to a fleet (pipeline.deploy.fleet): three loopback OpenSSH "devices", one of them made to fail.

Each device is a real sshd on 127.0.0.1 (tests/sshd_fixture.py), on a port of its own, and a home of its own: the
command wrapper the fixture installs as the server's ForceCommand (it records every command, then runs it) is
given `HOME=<the device's folder>; cd "$HOME"` before it runs the command, so the default --remote-dir
~/dvit-deploy is a different directory on each device, as on three Jetsons. One client key logs in to all three.
The second device is broken: its engine cache (~/dvit-deploy/cache/build) is a file, so its `dvit build` step
fails there. Everything else is tests/test_deploy.py's device: the device venv of tests/device_env.py (README's
`pip install ".[device,onnxruntime]"`, TensorRT-RTX standing in for JetPack's TensorRT) as --remote-python, the
ONNX graphs validated in ONNX Runtime since there is no GPU, the plugin built with this machine's nvcc against
../shared/tensorrt-oss/v11.1 for one architecture.

The fleet runs once (module fixture) through its command line, two devices at once; the first device builds,
the other two get its engines (and plugin library) through their engine caches. Without sshd the tests that
need it skip and say why; the host-list checks need none.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
from device_env import device_venv
from sshd_fixture import APT_LINE, Sshd, SshdUnavailable, start_sshd
from test_deploy import HAVE_HEADERS, HEADERS
from test_precision import make_tiny_export

from pipeline import cli
from pipeline.deploy import DeployOptions, fleet
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TARGET = "desktop-rtx"
LATENCY = "--duration-s 0.2 --warmup-s 0.05 --min-iters 3 --rounds 1"


def _give_home(server: Sshd, home: Path) -> None:
    """Make `home` the device's home: its command wrapper exports HOME and starts there."""
    config = (server.dir / "sshd_config").read_text()
    (wrapper,) = re.findall(r"^ForceCommand (\S+)$", config, re.MULTILINE)
    text = Path(wrapper).read_text()
    assert text.count("\nexec ") == 1, text
    home.mkdir(parents=True, exist_ok=True)
    Path(wrapper).write_text(text.replace("\nexec ", f'\nexport HOME={shlex.quote(str(home))}; cd "$HOME" || exit 1\n'
                                                     "exec ", 1))


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fleet-devices")
    servers: list[Sshd] = []
    try:
        for i in range(3):
            servers.append(start_sshd(root / f"sshd{i}"))
    except SshdUnavailable as e:
        for s in servers:
            s.stop()
        pytest.skip(f"no OpenSSH server for the fleet tests: {e} (Debian: `{APT_LINE}`)")
    key = servers[0].identity
    known = root / "known_hosts"
    lines = []
    for i, s in enumerate(servers):
        if i:  # one client key for the whole fleet
            with open(s.dir / "authorized_keys", "a") as f:
                f.write(Path(f"{key}.pub").read_text())
        _give_home(s, root / f"home{i}")
        host_key = (s.dir / "host_ed25519.pub").read_text().split()
        lines.append(f"[127.0.0.1]:{s.port} {host_key[0]} {host_key[1]}\n")
    known.write_text("".join(lines))
    # the second device's engine cache is a file: its `dvit build --cache-dir` cannot write there
    (root / "home1" / "dvit-deploy" / "cache").mkdir(parents=True)
    (root / "home1" / "dvit-deploy" / "cache" / "build").write_text("not a folder\n")
    yield {"servers": servers, "homes": [root / f"home{i}" for i in range(3)], "key": key, "known": known}
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pipeline.reference import record

    root = tmp_path_factory.mktemp("fleet-art")
    export, _ = make_tiny_export(root, batch_sizes=(1,))
    record(root / "ref.npz", graphs=str(export), limit=8, threads=1, progress=False)
    source = root / "source"  # a snapshot of what is shipped: the working tree may change while the tests run
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "plugins", source / "plugins", ignore=shutil.ignore_patterns("build*", "__pycache__"))
    shutil.copytree(REPO / "targets", source / "targets")
    shutil.copy2(REPO / "pyproject.toml", source / "pyproject.toml")
    shutil.copy2(REPO / "README.md", source / "README.md")
    python = device_venv(tmp_path_factory.getbasetemp() / "device-env")  # the same venv as tests/test_deploy.py's
    return {"root": root, "export": export, "ref": root / "ref.npz", "source": source, "python": python}


@pytest.fixture(scope="module")
def run(devices: dict, art: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One fleet deploy from a parsed command line (--hosts FILE, two devices at once), table and all."""
    base = tmp_path_factory.mktemp("fleet-run")
    servers = devices["servers"]
    labels = [f"{s.user}@127.0.0.1:{s.port}" for s in servers]
    hosts = base / "hosts.txt"
    hosts.write_text(f"# the line\n{labels[0]} {TARGET}\n\n{labels[1]}   # takes --target\n"
                     f"  {labels[2]}\t{TARGET}  # trailing comment\n")
    status, out, err, seconds, specs = _fleet(art, devices, hosts, base / "results", "--parallel", "2")
    (summary,) = (base / "results").glob("fleet-*/fleet.json")
    (base / "output.txt").write_text(out + "\n--- stderr ---\n" + err)  # to read after a failure
    return {"status": status, "out": out, "err": err, "labels": labels, "specs": specs, "hosts_file": hosts,
            "summary": json.loads(summary.read_text()), "fleet_dir": summary.parent, "homes": devices["homes"],
            "seconds": seconds}


def _fleet(art: dict, devices: dict, hosts: Path, results: Path, *extra: str) -> tuple:
    """Parse a fleet command line as `dvit deploy` takes it, deploy, report: (exit status, stdout, stderr,
    seconds, the devices)."""
    argv = ["--graphs", str(art["export"]), "--target", TARGET, "--hosts", str(hosts), *extra,
            "--reference", str(art["ref"]), "--remote-python", str(art["python"]), "--out", str(results),
            "--identity", str(devices["key"]), "--known-hosts", str(devices["known"]), "--cuda-archs", "86",
            "--jobs", "2", "--latency-args", LATENCY]
    if HAVE_HEADERS:
        argv += ["--tensorrt-root", str(HEADERS)]
    args = cli.build_parser("deploy").parse_args(["deploy", *argv])
    specs = fleet.host_specs(args.host or [], args.hosts, args.target)
    ns = argparse.Namespace(**{**vars(args), "host": specs[0].host})
    # the source snapshot is shipped (DeployOptions.source is API-only)
    opts = dataclasses.replace(DeployOptions.from_args(ns), source=art["source"])
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = fleet.deploy_and_report(specs, opts, parallel=args.parallel,
                                         share_engines=not args.no_share_engines)
    return status, out.getvalue(), err.getvalue(), time.monotonic() - t0, specs


@pytest.fixture(scope="module")
def again(run: dict, devices: dict, art: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same fleet again with --no-build, one device at a time, engines not shared: the two deployed devices
    reuse their current engines; the failed one has none to reuse."""
    base = tmp_path_factory.mktemp("fleet-again")
    status, out, err, seconds, _ = _fleet(art, devices, run["hosts_file"], base / "results", "--parallel", "1",
                                          "--no-build", "--no-share-engines")
    (summary,) = (base / "results").glob("fleet-*/fleet.json")
    return {"status": status, "out": out, "err": err, "summary": json.loads(summary.read_text()),
            "seconds": seconds}


# ---------------------------------------------------------------------------------------------- the fleet
def test_the_fleet_ends_with_one_table_and_the_exit_status_names_the_failed_device(run: dict) -> None:
    labels = run["labels"]
    assert [s.where.rsplit(":", 1)[1] for s in run["specs"]] == ["2", "4", "5"]
    assert [s.target for s in run["specs"]] == [TARGET] * 3
    assert run["status"] == 1, run["out"][-3000:] + run["err"][-3000:]
    # the last line names the failed device, and only it
    assert run["err"].rstrip().splitlines()[-1] == f"dvit deploy: 1 of 3 devices failed: {labels[1]}"
    out = run["out"]
    table = out[out.index("\nhost "):].strip().splitlines()
    header = re.split(r"\s{2,}", table[0])
    assert header == list(fleet.COLUMNS)
    assert set(table[1]) <= {"-", " "}
    rows = {line.split()[0]: line for line in table[2:5]}
    assert list(rows) == labels
    for i in (0, 2):
        assert re.match(rf"{re.escape(labels[i])}\s+{TARGET}\s+- / TensorRT-RTX \d+(\.\d+)+\s+ok\s+passed\s", rows[labels[i]]), \
            rows[labels[i]]
    assert re.match(rf"{re.escape(labels[1])}\s+{TARGET}\s+- / TensorRT-RTX \S+\s+FAILED\s", rows[labels[1]])
    # the failed device's one-line error under the table
    (error,) = [line for line in out.splitlines() if line.startswith(f"  {labels[1]}: ")]
    assert "step 'build' failed on 127.0.0.1 (exit 2)" in error and "current still points at nothing" in error


def test_parallel_output_is_prefixed_with_the_device(run: dict) -> None:
    labels = run["labels"]
    said = [line for line in run["out"].splitlines() if line.startswith("[")]
    for label in labels:  # each device's own progress, every line prefixed with it
        mine = [line[len(label) + 3:] for line in said if line.startswith(f"[{label}] ")]
        assert any(m.startswith(f"dvit deploy: {TARGET} to {label}, release ") for m in mine), mine[:3]
        assert any(m.startswith("  preflight ") for m in mine) and any(m.startswith("  ship ") for m in mine)
    assert all(re.match(r"\[[^\]]+@127\.0\.0\.1:\d+\] ", line) for line in said)
    ends = {label: [line for line in said if line.startswith((f"[{label}] ok in ", f"[{label}] FAILED: "))]
            for label in labels}
    assert [len(v) for v in ends.values()] == [1, 1, 1]
    assert ends[labels[1]][0].startswith(f"[{labels[1]}] FAILED: step 'build' failed")
    # what the failed device's deploy wrote to stderr (the device's last lines of the step) is prefixed too
    tail = [line for line in run["err"].splitlines() if "last lines of step 'build'" in line]
    assert tail and all(line.startswith(f"[{labels[1]}] ") for line in tail)


def test_the_summary_json_and_each_device_results(run: dict) -> None:
    labels, s = run["labels"], run["summary"]
    assert s["format"] == fleet.FORMAT and s["exit_status"] == 1 and s["failed"] == [labels[1]]
    assert s["parallel"] == 2 and s["share_engines"] is True
    assert [(h["host"], h["target"], h["status"]) for h in s["hosts"]] == [
        (labels[0], TARGET, "ok"), (labels[1], TARGET, "failed"), (labels[2], TARGET, "ok")]
    assert [g["hosts"] for g in s["groups"]] == [labels] and s["groups"][0]["leader"] == labels[0]
    assert (run["fleet_dir"] / "fleet.md").read_text().count(f"| {TARGET} |") == 3
    for i, h in enumerate(s["hosts"]):
        home = run["homes"][i] / "dvit-deploy"
        if i == 1:  # failed: no current, its logs came back, the previous state (none) is untouched
            assert not (home / "current").exists()
            record = json.loads((Path(h["results_dir"]) / "deploy.json").read_text())
            assert record["status"] == "failed"
            assert [x["name"] for x in record["steps"] if x["status"] == "failed"] == ["build"]
            assert "cannot be written" in record["steps"][-1]["stderr_tail"]
            assert h["error"].startswith("step 'build' failed on 127.0.0.1 (exit 2)")
            continue
        # deployed: its own current release, in its own home, and its own results folder
        assert os.readlink(home / "current") == f"releases/{h['release']}"
        assert (home / "releases" / h["release"] / "out" / "validation.json").is_file()
        rd = Path(h["results_dir"])
        assert rd.parent.parent == run["fleet_dir"] and rd.name.startswith(f"127.0.0.1-{TARGET}-")
        record = json.loads((rd / "deploy.json").read_text())
        assert record["status"] == "ok" and record["host"] == labels[i]
        assert h["validation"]["passed"] is True and h["backend"] == "TensorRT-RTX"
        assert h["backend_version"] == record["facts"]["tensorrt_rtx"]
        assert h["error"] is None
        if h["latency"] is not None and not h["latency"]["available"]:  # no GPU here: no numbers, and why
            assert h["latency"]["reason"]


def test_the_first_device_of_the_group_builds_and_the_others_reuse_its_engines(run: dict) -> None:
    labels, hosts = run["labels"], run["summary"]["hosts"]
    first, third = hosts[0], hosts[2]
    # the first device deployed alone; the other two began after it had ended (and overlapped: --parallel 2)
    end = first["start_s"] + first["seconds"] - 0.02  # (each figure rounded to 0.01 s)
    assert hosts[1]["start_s"] >= end and third["start_s"] >= end
    assert max(hosts[1]["start_s"], third["start_s"]) < min(h["start_s"] + h["seconds"] for h in hosts[1:])
    if first["engines"].get("built") is None:
        pytest.skip("the device's dvit has no `build` here: no engines to share")
    n = first["engines"]["built"]
    assert n > 0 and first["engines"]["reused"] == 0 and "shared_from" not in first["engines"]
    assert third["engines"]["built"] == 0 and third["engines"]["reused"] == n
    assert third["engines"]["shared_from"] == labels[0] and third["engines"]["seeded"]["offered"] == n
    # the engines came from the first device's cache: the same plans, entry by entry
    cache0 = run["homes"][0] / "dvit-deploy" / "cache" / "build"
    cache2 = run["homes"][2] / "dvit-deploy" / "cache" / "build"
    plans = sorted(p.name for p in cache0.glob("*.plan"))
    assert len(plans) == n and sorted(p.name for p in cache2.glob("*.plan")) == plans
    assert all((cache0 / p).read_bytes() == (cache2 / p).read_bytes() for p in plans)
    log = next((Path(third["results_dir"]) / "out" / "logs").glob("*-build.out")).read_text()
    assert f": 0 built, {n} reused" in log, log
    # the failed device got the plugin library, but its engine cache could not take the engines
    assert any("engines not shared: cannot create" in x for x in hosts[1]["notes"]), hosts[1]["notes"]
    if HAVE_HEADERS:
        for h in (hosts[1], hosts[2]):
            plugin_log = next((Path(h["results_dir"]) / "out" / "logs").glob("*-plugin.out")).read_text()
            assert "cached, not rebuilt" in plugin_log
        first_log = next((Path(first["results_dir"]) / "out" / "logs").glob("*-plugin.out")).read_text()
        assert "cached, not rebuilt" not in first_log


def test_plan_headers_decide_what_may_be_shared(run: dict) -> None:
    """The real plans the first device built: they fit its TensorRT-RTX version, not another release or GPU."""
    cache0 = run["homes"][0] / "dvit-deploy" / "cache" / "build"
    plans = sorted(cache0.glob("*.plan"))
    if not plans:
        pytest.skip("no engines were built on the first device")
    version = run["summary"]["hosts"][0]["backend_version"]
    assert fleet.plan_fits(plans[0], "tensorrt-rtx", version, None) is None
    other = ".".join(str(int(x) + 1) if i == 1 else x for i, x in enumerate(version.split(".")))
    assert str(fleet.plan_fits(plans[0], "tensorrt-rtx", other, None)).startswith(f"rebuild: {plans[0].name} was built by "
                                                                               f"TensorRT-RTX ")
    assert str(fleet.plan_fits(plans[0], "tensorrt", "10.3.0", None)).startswith("rebuild:")
    assert str(fleet.plan_fits(plans[0], "tensorrt-rtx", None, None)).startswith("unknown:")
    from pipeline.backend.tensorrt.plan_header import read_plan_header

    sms = [c for c in read_plan_header(plans[0]).fields.get("compute_capabilities") or [] if isinstance(c, int)]
    if sms:
        assert fleet.plan_fits(plans[0], "tensorrt-rtx", version, sms[0]) is None
        assert fleet.plan_fits(plans[0], "tensorrt-rtx", version, 53) == (
            f"rebuild: {plans[0].name} is for {', '.join(f'sm_{c}' for c in sms)}, this device's GPU is sm_53")


def test_no_build_fleet_one_at_a_time_without_sharing(run: dict, again: dict) -> None:
    labels, s = run["labels"], again["summary"]
    assert again["status"] == 1 and s["failed"] == [labels[1]] and s["groups"] == [] and not s["share_engines"]
    assert again["err"].rstrip().splitlines()[-1] == f"dvit deploy: 1 of 3 devices failed: {labels[1]}"
    hosts = s["hosts"]
    assert hosts[1]["error"].startswith("--no-build reuses the engines of the current release, but 127.0.0.1 has "
                                        "none")
    for i in (0, 2):
        h = hosts[i]
        assert h["status"] == "ok" and h["release"] != run["summary"]["hosts"][i]["release"]
        assert os.readlink(run["homes"][i] / "dvit-deploy" / "current") == f"releases/{h['release']}"
        record = json.loads((Path(h["results_dir"]) / "deploy.json").read_text())
        steps = {x["name"]: x["status"] for x in record["steps"]}
        assert steps["build"] == "skipped" and steps["reuse-engines"] == "ok" and steps["validate"] == "ok"
    # --parallel 1: one device after the other, in the order listed
    spans = sorted((h["start_s"], h["start_s"] + h["seconds"]) for h in hosts)
    assert [h["start_s"] for h in hosts] == sorted(h["start_s"] for h in hosts)
    assert all(a[1] <= b[0] + 0.02 for a, b in itertools.pairwise(spans))  # (each figure rounded to 0.01 s)


# ---------------------------------------------------------------------------------------------- the host list
def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hosts.txt"
    p.write_text(text)
    return p


def test_hosts_file_lines(tmp_path: Path) -> None:
    p = _file(tmp_path, "# fleet\n\nnvidia@10.0.0.1 orin-nano\n  nvidia@10.0.0.2:2222   # default target\n"
                        "jetson.local thor # comment\nu@[fe80::1]:22 orin-nx\n")
    specs = fleet.parse_hosts_file(p, "agx-orin")
    assert [(s.host, s.port, s.target, s.where) for s in specs] == [
        ("nvidia@10.0.0.1", None, "orin-nano", f"{p}:3"), ("nvidia@10.0.0.2", 2222, "agx-orin", f"{p}:4"),
        ("jetson.local", None, "thor", f"{p}:5"), ("u@[fe80::1]", 22, "orin-nx", f"{p}:6")]
    assert [s.label for s in specs] == ["nvidia@10.0.0.1", "nvidia@10.0.0.2:2222", "jetson.local", "u@[fe80::1]:22"]
    both = fleet.host_specs(["a@h1:23"], p, "orin-nano")
    assert [s.label for s in both][:2] == ["a@h1:23", "nvidia@10.0.0.1"] and both[0].where == "--host"


@pytest.mark.parametrize("text, default, message", [
    ("nvidia@10.0.0.1 orin-nano extra\n", None,
     r"^{f}:1: 'nvidia@10.0.0.1 orin-nano extra' is not one device: expected `user@host\[:port\] \[target\]`"),
    ("# no target\nnvidia@10.0.0.1\n", None,
     r"^{f}:2: nvidia@10.0.0.1 has no target and no --target was given: expected `user@host\[:port\] \[target\]`"),
    ("nvidia@10.0.0.1:notaport orin-nano\n", None,
     r"^{f}:1: 'nvidia@10.0.0.1:notaport' is not a device: expected `user@host\[:port\] \[target\]`"),
    ("\n# only comments\n", "orin-nano", r"^--hosts {f}: no device in it: write one `user@host\[:port\] \[target\]`"),
    ("a@h1 orin-nano\nb@h2 orin-nanoo\n", None, r"^{f}:2: unknown target 'orin-nanoo' \(did you mean orin-nano\?\)"),
    ("a@h1 orin-nano\na@H1:22 thor\n", None,
     r"^{f}:2: a@H1:22 is already listed \({f}:1\): deploy to each device once per run"),
])
def test_a_bad_hosts_line_names_file_and_line(tmp_path: Path, text: str, default: str | None, message: str) -> None:
    p = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        fleet.host_specs([], p, default)
    assert re.match(message.replace("{f}", re.escape(str(p))), str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


def test_other_bad_fleet_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--hosts .*missing\.txt: cannot read it \(No such file or directory\)"):
        fleet.host_specs([], tmp_path / "missing.txt", "orin-nano")
    with pytest.raises(ConfigError, match=r"^--host a@h: no --target given"):
        fleet.host_specs(["a@h"], None, None)
    with pytest.raises(ConfigError, match=r"^no device: pass --host"):
        fleet.host_specs([], None, "orin-nano")
    opts = DeployOptions(graphs=tmp_path, target="orin-nano", host="x")
    with pytest.raises(ConfigError, match=r"^--parallel 0: deploy to at least 1 device at a time$"):
        fleet.deploy_fleet(fleet.host_specs(["a@h"], None, "orin-nano"), opts, parallel=0)


def test_latency_p50_picks_the_plain_runs_of_the_smallest_batch(tmp_path: Path) -> None:
    def run(model: str, mode: str, batch: int, p50: float, **kw: object) -> dict:
        return {"model": model, "mode": mode, "batch": batch, "backend": "tensorrt", "io": "host",
                "cuda_graph": False, "end_to_end": {"p50_ms": p50}, **kw}

    p = tmp_path / "latency.json"
    p.write_text(json.dumps({"runs": [
        run("pruned", "chain", 8, 9.0), run("dense", "fused", 8, 12.0),
        run("pruned", "chain", 1, 2.5), run("pruned", "fused", 1, 2.25), run("dense", "fused", 1, 4.0),
        run("pruned", "fused", 1, 0.5, io="device"), run("pruned", "chain", 1, 0.4, cuda_graph=True),
        {"batch": 1, "backend": "tensorrt", "unavailable": "no GPU"}]}))
    assert fleet.latency_p50(p) == {"available": True, "batch": 1, "backend": "tensorrt", "pruned_p50_ms": 2.25,
                                    "pruned_mode": "fused", "dense_p50_ms": 4.0}
    row = fleet.FleetRow("u@h", "orin-nano", "ok", latency=fleet.latency_p50(p))
    assert row.cells()[5] == "b1 2.25 / 4.00 ms"
    p.write_text(json.dumps({"runs": [{"batch": 1, "backend": "tensorrt", "unavailable": "no GPU here"}],
                             "unavailable": []}))
    assert fleet.latency_p50(p) == {"available": False, "reason": "no GPU here"}
    assert fleet.latency_p50(tmp_path / "none.json") is None


def test_dry_run_prints_each_device_and_writes_nothing(art: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    specs = fleet.host_specs(["u@127.0.0.1:1", "u@127.0.0.1:2"], None, TARGET)
    opts = DeployOptions(graphs=art["export"], target=TARGET, host="x", reference=art["ref"], dry_run=True,
                         out=tmp_path / "results", source=art["source"], progress=False)
    r = fleet.deploy_fleet(specs, opts)
    out = capsys.readouterr().out
    assert [row.status for row in r.rows] == ["dry-run", "dry-run"] and r.exit_status == 0 and r.out is None
    assert out.index("## u@127.0.0.1:1 (desktop-rtx)") < out.index("## u@127.0.0.1:2 (desktop-rtx)")
    assert out.count("# 1. preflight (reads only)") == 2 and not (tmp_path / "results").exists()


def test_exit_status_counts_failed_devices_up_to_125() -> None:
    rows = [fleet.FleetRow(f"u@h{i}", "orin-nano", "failed" if i % 2 else "ok") for i in range(300)]
    r = fleet.FleetResult(rows, None, 0.0, 4, True)
    assert len(r.failed) == 150 and r.exit_status == 125
    assert fleet.FleetResult(rows[:4], None, 0.0, 4, True).final_line() == \
        "dvit deploy: 2 of 4 devices failed: u@h1, u@h3"
    assert fleet.FleetResult(rows[:1], None, 0.0, 4, True).exit_status == 0
