"""dvit deploy against a real OpenSSH server on 127.0.0.1 (tests/sshd_fixture.py), with the desktop-rtx target.

The loopback "device" is this machine, with the Python environment README.md tells a device user to make
(tests/device_env.py: `python3 -m venv` + `pip install ".[device,onnxruntime]"`, no torch, timm or ModelOpt),
given as --remote-python; its TensorRT is TensorRT-RTX (the pinned `tensorrt-rtx` extra, standing in for JetPack's
TensorRT). The plugin is built with this machine's nvcc against NVIDIA's public TensorRT headers
(../shared/tensorrt-oss/v11.1, one CUDA architecture), and with no GPU here the remote validation runs the shipped
ONNX graph set in ONNX Runtime against the recorded reference (the engines could not run, which the deploy
records, and latency is skipped saying so). Without sshd (`apt-get install -y openssh-server rsync`) these tests
skip and say why. The device-fit checks run on captured tool output. The test server records every command it is
asked to run (sshd_fixture), so the tests see exactly what a deploy executed on the device.
tests/test_deploy_device.py deploys with the deploy's own venv and a plugin graph set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from device_env import device_venv
from sshd_fixture import APT_LINE, Sshd, SshdUnavailable, closed_port, start_sshd
from test_precision import make_tiny_export

from pipeline import cli
from pipeline.deploy import DeployError, DeployOptions, DeployResult, deploy, preflight, remote
from pipeline.deploy import bundle as bundle_mod
from pipeline.deploy.render import Renderer
from pipeline.errors import ConfigError, DvitError
from pipeline.targets import load_target

REPO = Path(__file__).resolve().parents[1]
HEADERS = Path(os.environ.get("DVIT_TRT_HEADERS_ROOT", REPO.parent / "shared" / "tensorrt-oss")) / "v11.1"
HAVE_HEADERS = (HEADERS / "include" / "NvInferRuntime.h").is_file()
STEPS = ["preflight", "ship", *remote.STEP_NAMES]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except SshdUnavailable as e:
        pytest.skip(f"no OpenSSH server for the deploy tests: {e} (Debian: `{APT_LINE}`)")
    yield server
    server.stop()


def _rewrite(src: Path, dst: Path, rel: str, data: bytes) -> Path:
    """A copy of graph set `src` whose file `rel` holds `data`, its manifest entry updated (hash and size)."""
    shutil.copytree(src, dst)
    (dst / rel).write_bytes(data)
    m = json.loads((dst / "manifest.json").read_text())

    def walk(o: object) -> None:
        if isinstance(o, dict):
            if o.get("file") == rel:
                o["sha256"], o["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(m)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    return dst


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import onnx

    from pipeline.reference import record

    root = tmp_path_factory.mktemp("deploy")
    export, _ = make_tiny_export(root)
    record(root / "ref.npz", graphs=str(export), limit=16, threads=1, progress=False)
    m = onnx.load(export / "b4" / "stage3.onnx")
    m.doc_string = "same graph, new bytes"  # one changed file, still a valid graph
    changed = _rewrite(export, root / "changed", "b4/stage3.onnx", m.SerializeToString())
    corrupt = _rewrite(changed, root / "corrupt", "b4/stage2.onnx", b"not an ONNX model\n" * 8)
    # a snapshot of the sources to ship: the working tree may change while the tests run
    source = root / "source"
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "plugins", source / "plugins",
                    ignore=shutil.ignore_patterns("build*", "__pycache__"))
    shutil.copytree(REPO / "targets", source / "targets")
    shutil.copy2(REPO / "pyproject.toml", source / "pyproject.toml")
    shutil.copy2(REPO / "README.md", source / "README.md")
    # the device's Python, as README.md tells a device user to make it (shared by the session's deploy tests)
    python = device_venv(tmp_path_factory.getbasetemp() / "device-env")
    return {"root": root, "export": export, "changed": changed, "corrupt": corrupt, "ref": root / "ref.npz",
            "source": source, "python": python}


def options(server: Sshd, art: dict, device: Path, results: Path, **extra: object) -> DeployOptions:
    kw: dict = {
        "graphs": art["export"], "target": "desktop-rtx", "host": server.host, "port": server.port,
        "identity": str(server.identity), "known_hosts": str(server.known_hosts), "reference": art["ref"],
        "remote_dir": str(device), "remote_python": str(art["python"]), "out": results,
        "tensorrt_root": str(HEADERS) if HAVE_HEADERS else None, "cuda_archs": "86", "jobs": 2,
        "source": art["source"], "progress": False,
        # short latency runs, for when the device's dvit has `latency`
        "latency_args": ("--duration-s", "0.2", "--warmup-s", "0.05", "--min-iters", "3", "--rounds", "1")}
    kw.update(extra)
    return DeployOptions(**kw)


@pytest.fixture(scope="module")
def runs(sshd: Sshd, art: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four deploys to one device: first, one graph changed, a corrupted graph (fails), --only-validate."""
    base = tmp_path_factory.mktemp("device")
    device, results = base / "dvit-deploy", base / "results"
    opts = options(sshd, art, device, results)
    before = len(sshd.commands())
    first = deploy(opts)
    executed = sshd.commands()[before:]  # what the first deploy ran on the device, in order
    current_after_first = os.readlink(device / "current")
    one = device / "releases" / first.release
    # what the first release holds on the device (the last deploy prunes it: --keep-releases 3)
    seen = {"verify": bundle_mod.verify(one), "bundle": json.loads((one / "bundle.json").read_text()),
            "steps_log": (one / "out" / "steps.log").read_text(),
            "validation": json.loads((one / "out" / "validation.json").read_text()),
            "plugin_lib": (one / "out" / "plugins" / "libdvit_trt_plugins.so").is_file(),
            "report": (one / "out" / "report").is_dir(), "executed": executed,
            # each engine of the release and its copy in the device's engine cache: (inode, inode)
            "engine_inodes": {p.name: p.stat().st_ino for p in (one / "out" / "engines").rglob("*.plan")},
            "cache_inodes": {p.stat().st_ino for p in (device / "cache" / "build").glob("*.plan")}}
    second = deploy(dataclasses.replace(opts, graphs=art["changed"]))
    current_after_second = os.readlink(device / "current")
    two = device / "releases" / second.release
    files = ("graphs/b4/stage0.onnx", "pipeline/graphset.py", "plugins/CMakeLists.txt", "reference/ref.npz",
             "graphs/b4/stage3.onnx")
    seen["inodes"] = {f: ((one / f).stat().st_ino, (two / f).stat().st_ino) for f in files}
    with pytest.raises(DeployError) as failure:
        deploy(dataclasses.replace(opts, graphs=art["corrupt"]))
    current_after_failure = os.readlink(device / "current")
    (failure_release,) = set(os.listdir(device / "releases")) - {first.release, second.release}
    again = deploy(dataclasses.replace(opts, graphs=art["changed"], only_validate=True))
    return {"options": opts, "device": device, "results": results, "first": first, "second": second,
            "failure": failure.value,
            "seen": seen, "failure_release": failure_release,
            "again": again, "current": [current_after_first, current_after_second, current_after_failure,
                                        os.readlink(device / "current")]}


# ---------------------------------------------------------------------------------------------- deploys
def test_first_deploy_ships_a_verified_bundle_and_runs_the_steps_in_order(runs: dict) -> None:
    r = runs["first"]
    assert r.status == "ok" and [s.name for s in r.steps] == STEPS
    seen = runs["seen"]
    assert runs["current"][0] == f"releases/{r.release}"
    # the bundle arrived whole: every file's sha256 matches bundle.json, which matches the one kept locally
    assert seen["verify"] == []
    local = json.loads((r.results_dir / "bundle.json").read_text())
    assert seen["bundle"] == local
    assert r.transfer["sent"] == r.transfer["files"] == len(local["files"]) + 2 and not r.transfer["link_dest"]
    status = {s.name: s for s in r.steps}
    for name in ("preflight", "ship", "verify", "commands", "validate", "switch", "prune"):
        assert status[name].status == "ok", (name, status[name])
    assert status["env"].status == "skipped" and "--remote-python" in (status["env"].reason or "")
    assert status["reuse-engines"].status == "skipped"
    for name in ("build", "report"):  # other stages may not exist yet: skipped and said so, never faked
        s = status[name]
        assert s.status == "ok" or (s.status == "skipped" and f"`dvit {name}` is not available" in (s.reason or ""))
    if not r.facts["gpus"]:  # engines were built, but nothing here can run them: no timings, and it says why
        assert status["latency"].status == "skipped", status["latency"]
        assert status["latency"].reason == "no GPU on the device: the engines cannot run, so there is nothing to time"
    # the release does not hold a second copy of each engine: they are hard links into the device's engine cache
    if status["build"].status == "ok":
        assert seen["engine_inodes"] and set(seen["engine_inodes"].values()) <= seen["cache_inodes"]
    if HAVE_HEADERS:
        assert status["plugin"].status == "ok" and seen["plugin_lib"]
    else:
        assert status["plugin"].status == "skipped" and "TensorRT headers" in (status["plugin"].reason or "")
    # the device's own step log, in the same order
    logged = [line.split()[1] for line in seen["steps_log"].splitlines()
              if line.split()[2] in ("ok", "skipped:", "failed")]
    assert logged == list(remote.STEP_NAMES)
    # no GPU here: validation ran the shipped ONNX graphs in ONNX Runtime against the recording, and says so
    v = seen["validation"]
    assert v["reference"]["kind"] == "recorded" and v["requirements"]["passed"] and r.validation["passed"]
    if not r.facts["gpus"]:
        assert "engines could not run" in r.engines["why"] and v["graphs_dir"].endswith("/graphs")
        assert r.power == {"available": False, "reason": r.power["reason"]}


def test_the_results_come_back(runs: dict) -> None:
    r = runs["first"]
    d = r.results_dir
    assert d.parent == runs["results"] and d.name == f"127.0.0.1-desktop-rtx-{r.release}"
    record = json.loads((d / "deploy.json").read_text())
    assert record["status"] == "ok" and record["format"] == "dvit-edge/deploy/v1"
    assert [s["name"] for s in record["steps"]] == STEPS
    assert (d / "out" / "validation.json").is_file() and (d / "out" / "steps.log").is_file()
    assert any(p.name.endswith("-validate.out") for p in (d / "out" / "logs").iterdir())
    assert "@@tensorrt_rtx_python" in (d / "preflight.txt").read_text()
    assert "| validate | ok |" in (d / "summary.md").read_text()
    assert not list(d.rglob("*.so")) and not list(d.rglob("*.onnx"))  # logs and JSON, not binaries
    if runs["seen"]["report"]:
        assert (d / "out" / "report" / "report.md").is_file()


def test_second_deploy_sends_only_what_changed_and_links_the_rest(runs: dict) -> None:
    r = runs["second"]
    assert r.status == "ok" and runs["current"][1] == f"releases/{r.release}"
    sent = set(r.transfer["sent_files"])
    assert "graphs/b4/stage3.onnx" in sent
    assert sent <= {"graphs/b4/stage3.onnx", "graphs/manifest.json", "bundle.json", "SHA256SUMS"}
    assert r.transfer["unchanged"] == r.transfer["files"] - len(sent) and r.transfer["link_dest"]
    inodes = runs["seen"]["inodes"]
    for rel in ("graphs/b4/stage0.onnx", "pipeline/graphset.py", "plugins/CMakeLists.txt", "reference/ref.npz"):
        assert inodes[rel][0] == inodes[rel][1], f"{rel} was copied, not hard-linked"
    assert inodes["graphs/b4/stage3.onnx"][0] != inodes["graphs/b4/stage3.onnx"][1]
    status = {s.name: s for s in r.steps}
    if HAVE_HEADERS:  # the plugin library comes from the device's cache: same sources, archs, nvcc and headers
        assert status["plugin"].status == "ok"
        out = next((r.results_dir / "out" / "logs").glob("*-plugin.out")).read_text()
        assert "cached, not rebuilt" in out
    if status["build"].status == "ok":  # the engine and timing caches live beside the releases, kept
        cache = runs["device"] / "cache" / "build"
        assert cache.is_dir() and any(cache.iterdir())
        # only the changed graph's engine is rebuilt; the device's engine cache gives the others
        log = next((r.results_dir / "out" / "logs").glob("*-build.out")).read_text()
        assert ": 1 built, 9 reused" in log, log


def test_a_failing_step_leaves_current_and_shows_the_remote_error(runs: dict) -> None:
    e = runs["failure"]
    second = runs["second"].release
    msg = str(e)
    assert "\n" not in msg
    assert f"current still points at releases/{second}" in msg
    # the corrupted graph stops the engine build (dvit build's one-line error, exit 2), or validation where
    # no build runs
    assert "step 'build' failed on 127.0.0.1 (exit 2)" in msg or "step 'validate' failed on 127.0.0.1 (exit 1)" in msg
    assert runs["current"][2] == f"releases/{second}"
    failed_dirs = [d for d in (runs["results"]).iterdir() if json.loads((d / "deploy.json").read_text())["status"]
                   == "failed"]
    assert len(failed_dirs) == 1
    record = json.loads((failed_dirs[0] / "deploy.json").read_text())
    failed = [s for s in record["steps"] if s["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["stderr_tail"] and "switch" not in [s["name"] for s in record["steps"]]
    assert failed[0]["stderr_tail"].strip().splitlines()[-1] in msg  # the device's own error, in the one line
    assert "Error parsing" in failed[0]["stderr_tail"] or "parse" in failed[0]["stderr_tail"].lower()
    # the summary does not claim a validation that never ran
    summary = (failed_dirs[0] / "summary.md").read_text()
    assert "was validated" not in summary and record["engines"]["validated"] is None, summary


def test_only_validate_reuses_the_current_release(runs: dict) -> None:
    r = runs["again"]
    assert r.status == "ok" and runs["current"][3] == f"releases/{r.release}"
    status = {s.name: s for s in r.steps}
    assert status["build"].status == status["plugin"].status == "skipped"
    assert status["build"].reason == "--only-validate" and status["latency"].reason == "--only-validate"
    assert status["validate"].status == "ok"
    assert status["reuse-engines"].status in ("ok", "skipped")
    assert r.transfer["sent"] == 0  # the same bundle as the current release: nothing to send
    releases = sorted(p.name for p in (runs["device"] / "releases").iterdir())
    # --keep-releases 3 counts complete releases: the three that were switched to stay, the failed one goes
    assert releases == sorted([runs["first"].release, runs["second"].release, r.release])
    assert status["prune"].status == "ok"


def _releases(device: Path) -> list[str]:
    return sorted(p.name for p in (device / "releases").iterdir())


def test_no_build_with_another_graph_set_is_refused(runs: dict, capsys: pytest.CaptureFixture) -> None:
    """Issue 16.2: the current release's engines were built from the `changed` graph set; reusing them for the
    `export` set (other graphs) is refused in preflight, before anything is shipped or switched."""
    device = runs["device"]
    before, current = _releases(device), os.readlink(device / "current")
    opts = dataclasses.replace(runs["options"], graphs=runs["options"].graphs.parent / "export", build=False)
    with pytest.raises(DvitError, match=r"^--no-build reuses the engines of 127\.0\.0\.1's current release \(\d{8}-"
                                        r"\d{6}\), which were built from another graph set \(export graphs, "
                                        r"(fp32,)+fp32, batch sizes 1, 4, manifest sha256 [0-9a-f]{12}\) than --graphs "
                                        r"\(export graphs, .*\): deploy without --no-build to build engines for these "
                                        r"graphs"):
        deploy(opts)
    assert _releases(device) == before and os.readlink(device / "current") == current


def test_pruning_keeps_the_last_complete_release(runs: dict, capsys: pytest.CaptureFixture) -> None:
    """Issue 16.3: two releases left half-shipped by interrupted deploys (as a killed deploy leaves them) must not
    count as kept releases: the next good deploy removes them, saying so, and keeps the last good one (the
    rollback target) among the --keep-releases 3."""
    device, last_good = runs["device"], runs["again"].release
    assert os.readlink(device / "current") == f"releases/{last_good}"
    stamp = time.mktime(time.strptime(last_good, "%Y%m%d-%H%M%S"))
    while time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp + 2)) >= time.strftime("%Y%m%d-%H%M%S"):
        time.sleep(0.5)  # the two must be older than the next release's name and newer than the last good one
    aborted = [time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp + i)) for i in (1, 2)]
    for name in aborted:  # half-shipped: part of the bundle, no steps run (interrupted while shipping)
        shutil.copytree(device / "releases" / last_good / "graphs", device / "releases" / name / "graphs")
    r = deploy(dataclasses.replace(runs["options"], graphs=runs["options"].graphs.parent / "changed",
                                   only_validate=True))
    kept = _releases(device)
    assert last_good in kept and r.release in kept and not set(aborted) & set(kept), kept
    assert len(kept) == 3  # three complete releases: this one, the last good one and the one before
    prune = next(s for s in r.steps if s.name == "prune")
    assert prune.status == "ok"
    log = next((r.results_dir / "out" / "logs").glob("*-prune.out")).read_text().split()
    assert sorted(d for w, d in zip(log[::2], log[1::2], strict=True) if w == "removed-incomplete") == aborted


def test_same_second_deploys_take_distinct_releases(runs: dict, capsys: pytest.CaptureFixture) -> None:
    """Issue 16.6: a release directory of this second (and the next ones) already exists on the device (another
    deploy): this one takes the next free name instead of stopping; --no-progress still prints the result line,
    with the remote path as the device has it."""
    device = runs["device"]
    now = time.time()
    taken = [time.strftime("%Y%m%d-%H%M%S", time.localtime(now + i)) for i in range(4)]
    for name in taken:
        (device / "releases" / name / "out").mkdir(parents=True)
    try:
        capsys.readouterr()
        r = deploy(dataclasses.replace(runs["options"], graphs=runs["options"].graphs.parent / "changed",
                                       only_validate=True))
    finally:
        for name in taken:
            shutil.rmtree(device / "releases" / name, ignore_errors=True)
    assert r.status == "ok" and re.fullmatch(r"\d{8}-\d{6}-\d+", r.release) and r.release.rsplit("-", 1)[0] in taken
    assert os.readlink(device / "current") == f"releases/{r.release}"
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("dvit deploy: ok in "), out
    assert f": {device}/current -> releases/{r.release}; results in {r.results_dir}" in out[0]


# `dvit` with Ctrl-C raising KeyboardInterrupt, as from a terminal: a test run started in the background (`make test
# &`, nohup) hands SIGINT down ignored, and Python then leaves it ignored, so the interrupt would reach only ssh.
RESTORE_CTRL_C = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "from pipeline import cli; sys.exit(cli.main(sys.argv[1:]))")
AS_FROM_A_TERMINAL = [sys.executable, "-c", RESTORE_CTRL_C]


def _cli_deploy(server: Sshd, art: dict, device: Path, results: Path) -> subprocess.Popen:
    """`dvit deploy` as a user runs it, in a session of its own (a terminal's Ctrl-C reaches the whole group)."""
    argv = [*AS_FROM_A_TERMINAL, "deploy", "--graphs", str(art["export"]), "--target", "desktop-rtx",
            "--host", server.host, "--port", str(server.port), "--identity", str(server.identity), "--known-hosts",
            str(server.known_hosts), "--reference", str(art["ref"]), "--remote-dir", str(device), "--remote-python",
            str(art["python"]), "--out", str(results), "--cuda-archs", "86", "--jobs", "2", "--no-progress"]
    if HAVE_HEADERS:
        argv += ["--tensorrt-root", str(HEADERS)]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_step(device: Path, proc: subprocess.Popen, names: tuple[str, ...], timeout: float = 180) -> str:
    """Waits until the device's steps.log says one of `names` started (and has not ended); returns which."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for log in device.glob("releases/*/out/steps.log"):
            words = [line.split()[1:3] for line in log.read_text().splitlines() if len(line.split()) >= 3]
            started = [w[0] for w in words if w[1] == "start"]
            ended = [w[0] for w in words if w[1] != "start"]
            if started and started[-1] in names and started[-1] not in ended:
                time.sleep(0.5)  # well inside the step
                return started[-1]
        time.sleep(0.05)
    raise AssertionError(f"no step of {names} started on the device within {timeout} s")


def _live_processes(needle: str) -> dict[int, str]:
    """Processes on this machine (the device) whose command line or working directory mentions `needle`."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd") if (d / "cwd").exists() else ""
        except OSError:
            continue
        if needle in cmd or needle in cwd:
            found[int(d.name)] = cmd
    return found


def _masters() -> set[int]:
    """The ssh ControlMasters of dvit deploys running here (their ControlPath is in a dvit-ssh-* folder; the
    clients that use one say ControlMaster=no)."""
    return {pid for pid, cmd in _live_processes("/dvit-ssh-").items()
            if cmd.startswith("ssh") and ("ControlMaster=yes" in cmd or "[mux]" in cmd)}


def _stop(pids: dict[int, str]) -> None:
    for pid in pids:  # processes a failing test leaves behind: the ones it found, by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_an_interrupted_deploy_stops_the_remote_work_and_removes_its_release(sshd: Sshd, art: dict,
                                                                              tmp_path: Path) -> None:
    """Issue 16.4: Ctrl-C while the device builds (the plugin, else the engines) stops the remote process group
    and removes the partial release: nothing of that deploy is left running or lying on the device."""
    device, results = tmp_path / "device", tmp_path / "results"
    others = _masters()
    proc = _cli_deploy(sshd, art, device, results)
    try:
        step = _wait_for_step(device, proc, ("plugin", "build"))
        assert _live_processes(str(device / "releases")), "the remote step should be running now"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    left = _live_processes(str(device / "releases"))
    for _ in range(50):  # the shells that ran the step end on their own once it is stopped
        if not left:
            break
        time.sleep(0.1)
        left = _live_processes(str(device / "releases"))
    _stop(left)
    assert proc.returncode == 130, err
    assert re.search(rf"interrupted during step '{step}': stopped the remote work \(process group \d+\) and removed "
                     rf"the partial release releases/\d{{8}}-\d{{6}} on 127\.0\.0\.1; current still points at "
                     r"nothing \(first deploy\)", err), err
    assert not left, left
    assert _releases(device) == [] and not os.path.lexists(device / "current")
    assert not results.exists()
    assert not _masters() - others  # and no ssh connection left open here


def test_a_lost_connection_is_not_a_failed_step(sshd: Sshd, art: dict, tmp_path: Path) -> None:
    """Issue 16.4: the ssh connection dies while a step runs on the device (its ControlMaster is killed): the ssh
    client exits 255 with no message; the deploy says the connection was lost and what the device says of the
    step (still running: stopped), instead of blaming the step."""
    device, results = tmp_path / "device", tmp_path / "results"
    others = _masters()
    proc = _cli_deploy(sshd, art, device, results)
    try:
        step = _wait_for_step(device, proc, ("plugin", "build"))
        ours = _masters() - others
        assert len(ours) == 1, ours  # this deploy's
        os.kill(ours.pop(), signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _stop(_live_processes(str(device / "releases")))
    assert proc.returncode == 2, err
    assert f"step '{step}' failed" not in err, err
    assert re.search(rf"lost the connection to 127\.0\.0\.1 during step '{step}' \(ssh exited 255[^)]*\); the step was "
                     r"still running there: stopped it and removed the release; current still points at nothing "
                     r"\(first deploy\)", err), err


def _renderer(opts: DeployOptions, release: str) -> Renderer:
    """The renderer a deploy of `opts` uses for `release`."""
    tgt = load_target(opts.target)
    return Renderer(opts, tgt, remote.Layout.make(opts.remote_dir, release),
                    bundle_mod.plan(opts.graphs, tgt, opts.reference, repo=opts.source))


def _listing(out: str) -> list[tuple[str, str]]:
    """A dry run's output as (title, command) pairs, in order: a header, then '# title\\ncommand' blocks."""
    blocks = out.split("\n\n")
    assert blocks[0].startswith("dvit deploy --dry-run: ") and blocks[-1] == "", out[-500:]
    pairs = [tuple(b.split("\n", 1)) for b in blocks[1:-1]]
    assert all(len(p) == 2 and p[0].startswith("# ") for p in pairs), pairs
    return [(t[2:], c) for t, c in pairs]


def _scripts(executed: list[str]) -> list[str]:
    """The POSIX-sh scripts among the commands the test server ran (Ssh.run sends `sh -c SCRIPT`)."""
    scripts = []
    for c in executed:
        if c.startswith("sh -c "):
            argv = shlex.split(c)
            assert len(argv) == 3, c
            scripts.append(argv[2])
    return scripts


def _same_but_device(printed: str, run: str, r: Renderer, facts: preflight.DeviceFacts, ran: dict) -> bool:
    """Whether the dry run's `printed` command is the command `run`, but for the values the device decides
    (`Renderer.decided`), each of which may stand for anything there where the dry run shows what decides it."""
    dry, known = r.decided(), r.decided(facts, ran)
    unknown = sorted({str(v) for k, v in dry.items() if str(v) and str(v) != str(known[k])}, key=len, reverse=True)
    if not unknown:
        return printed == run
    parts = re.split("|".join(map(re.escape, unknown)), printed)
    return re.fullmatch(".*?".join(map(re.escape, parts)), run, re.DOTALL) is not None


def test_the_run_executes_exactly_what_the_renderer_renders(runs: dict) -> None:
    """The device received the preflight script, the release directory, each step (wrapped) or its skip line, as
    the one renderer renders them for these options and the device's facts, and two rsync transfers: nothing else."""
    first: DeployResult = runs["first"]
    r = _renderer(runs["options"], first.release)
    assert first.results_dir is not None
    facts = preflight.parse_facts((first.results_dir / "preflight.txt").read_text())
    expected, ran = [r.preflight(), r.release_dir()], dict[str, str]()
    for i, step in enumerate(remote.STEPS, start=1):
        rec = first.step(step.name)
        assert rec is not None
        if rec.status == "skipped":
            expected.append(r.skipped(step, rec.reason or ""))
        else:
            assert rec.command == r.step(step, facts, ran)
            expected.append(r.wrapped(step, i, rec.command))
        ran[step.name] = rec.status
    executed = runs["seen"]["executed"]
    assert _scripts(executed) == expected
    assert [c.split()[:2] for c in executed if not c.startswith("sh -c ")] == [["rsync", "--server"]] * 2


def test_dry_run_prints_exactly_the_commands_the_run_executes(runs: dict, capsys: pytest.CaptureFixture) -> None:
    """The first deploy's options with --dry-run print the very commands that deploy ran (see the test above);
    only what the device decides (its nvcc and headers, a GPU, how the steps before went) reads as what decides it."""
    first: DeployResult = runs["first"]
    capsys.readouterr()
    dry = deploy(dataclasses.replace(runs["options"], dry_run=True))
    out = capsys.readouterr().out.replace(dry.release, first.release)
    listed = _listing(out)
    assert [c for _, c in listed] == [c.replace(dry.release, first.release) for c in dry.commands]
    steps = remote.STEPS
    assert [t.split(":")[0] for t in (t for t, _ in listed[3:3 + len(steps)])] == [f"step {s.name}" for s in steps]

    executed = _scripts(runs["seen"]["executed"])
    assert listed[0] == ("1. preflight (reads only)", executed[0].strip())
    assert listed[1] == ("2. a fresh release directory", executed[1])
    assert listed[3 + len(steps)][1] == executed[2]  # the wrapped form, shown for the first step, as run
    r = _renderer(runs["options"], first.release)
    assert first.results_dir is not None
    facts = preflight.parse_facts((first.results_dir / "preflight.txt").read_text())
    ran: dict[str, str] = {}
    compared = []
    for step, (_, printed) in zip(steps, listed[3:3 + len(steps)], strict=True):
        rec = first.step(step.name)
        assert rec is not None
        if rec.command is not None:
            assert _same_but_device(printed, rec.command, r, facts, ran), (printed, rec.command)
            compared.append(step.name)
        ran[step.name] = rec.status
    assert {"verify", "commands", "validate", "switch", "prune"} <= set(compared)
    # what the options decide is the same in both: only the device's values differ
    dry_ctx, run_ctx = r.context(), r.context(facts, ran)
    assert {k: v for k, v in dry_ctx.items() if k not in r.decided()} == \
        {k: v for k, v in run_ctx.items() if k not in r.decided()}


def test_dry_run_prints_every_remote_command_and_runs_none(art: dict, tmp_path: Path, sshd: Sshd,
                                                           capsys: pytest.CaptureFixture) -> None:
    opts = options(sshd, art, tmp_path / "device", tmp_path / "results", port=closed_port(), progress=True,
                   dry_run=True)
    before = len(sshd.commands())
    r = deploy(opts)
    out = capsys.readouterr().out
    assert r.status == "dry-run" and not (tmp_path / "device").exists() and not (tmp_path / "results").exists()
    assert len(sshd.commands()) == before
    for step in remote.STEPS:
        assert f"# step {step.name}:" in out
    for needle in ("cat /etc/nv_tegra_release", "nvpmodel -q", "jetson_clocks --show",
                   "sha256sum -c --quiet SHA256SUMS", "--link-dest=../../current/",
                   "-m pipeline.cli validate", "mv -T", "rsync",
                   " --duration-s 0.2 --warmup-s 0.05 --min-iters 3 --rounds 1 "):
        assert needle in out, needle


# ---------------------------------------------------------------------------------------------- the command line
DEPLOY_FLAGS = ("--help", "--graphs", "--target", "--host", "--port", "--identity", "--reference", "--remote-dir",
                "--remote-python", "--out", "--dry-run", "--no-build", "--only-validate", "--no-progress",
                "--host-key-check", "--known-hosts", "--connect-timeout", "--ssh-option", "--tensorrt-root",
                "--cuda-archs", "--need-disk-mb", "--keep-releases", "--tegrastats-interval", "--jobs",
                "--latency-args", "--hosts", "--parallel", "--no-share-engines")


def _parse(*argv: str) -> DeployOptions:
    return DeployOptions.from_args(cli.build_parser("deploy").parse_args(["deploy", *argv]))


def test_help_lists_every_option_once() -> None:
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "deploy", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr[-2000:]
    options_part = r.stdout.split("\noptions:\n", 1)[1]
    listed = re.findall(r"^  (?:-h, )?(--[a-z-]+)", options_part, re.MULTILINE)
    assert sorted(listed) == sorted(DEPLOY_FLAGS) and len(listed) == len(set(listed)), listed
    usage = r.stdout.split("\n\n", 1)[0]
    for flag in DEPLOY_FLAGS[1:]:
        assert len(re.findall(rf"(?<![a-z-]){re.escape(flag)}(?![a-z-])", usage)) == 1, flag
    assert "--no-progress         print only warnings, errors and the result" in options_part


def test_options_come_from_the_command_line_once() -> None:
    # the defaults of the command line are the defaults of DeployOptions
    assert _parse("--graphs", "g", "--target", "t", "--host", "h") == DeployOptions(graphs=Path("g"), target="t",
                                                                                  host="h")
    # every option set: each field (but the API-only `source`) comes from its own flag
    full = _parse("--graphs", "g", "--target", "t", "--host", "u@h", "--port", "2222", "--identity", "k",
                  "--reference", "r.npz", "--remote-dir", "/d", "--remote-python", "/py", "--out", "o", "--dry-run",
                  "--no-build", "--only-validate", "--no-progress", "--host-key-check", "yes", "--known-hosts", "kh",
                  "--connect-timeout", "3", "--ssh-option", "A=1", "--ssh-option", "B=2", "--tensorrt-root", "/trt",
                  "--cuda-archs", "87", "--need-disk-mb", "5.5", "--keep-releases", "2", "--tegrastats-interval",
                  "50", "--jobs", "4", "--latency-args", "--duration-s 5 --note 'a b'")
    assert full == DeployOptions(
        graphs=Path("g"), target="t", host="u@h", port=2222, identity="k", reference=Path("r.npz"), remote_dir="/d",
        remote_python="/py", out=Path("o"), dry_run=True, build=False, only_validate=True, progress=False,
        host_key_check="yes", known_hosts="kh", connect_timeout=3, ssh_options=("A=1", "B=2"), tensorrt_root="/trt",
        cuda_archs="87", need_disk_mb=5.5, keep_releases=2, tegrastats_ms=50, jobs=4,
        latency_args=("--duration-s", "5", "--note", "a b"))
    default = DeployOptions(graphs=Path("x"), target="x", host="x")
    same = [f.name for f in dataclasses.fields(DeployOptions) if getattr(full, f.name) == getattr(default, f.name)]
    assert same == ["source"]
    assert not full.building and DeployOptions(graphs=Path("g"), target="t", host="h", build=True).building
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.port = 22  # type: ignore[misc]


def test_command_line_errors(art: dict, capsys: pytest.CaptureFixture) -> None:
    argv = ["deploy", "--graphs", str(art["export"]), "--target", "desktop-rtx", "--host", "u@127.0.0.1",
            "--dry-run"]
    assert cli.main([*argv, "--latency-args", "--note 'unclosed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dvit deploy: error: --latency-args \"--note 'unclosed\": No closing quotation") and \
        err.count("\n") == 1, err
    assert cli.main([*argv, "--keep-releases", "0"]) == 2
    assert capsys.readouterr().err == "dvit deploy: error: --keep-releases 0: keep at least 1\n"


# ---------------------------------------------------------------------------------------------- bad input
def _nothing_left(tmp_path: Path) -> None:
    assert not (tmp_path / "device").exists() and not (tmp_path / "results").exists()


def test_unreachable_host(art: dict, tmp_path: Path, sshd: Sshd) -> None:
    opts = options(sshd, art, tmp_path / "device", tmp_path / "results", port=closed_port(), connect_timeout=5)
    with pytest.raises(DvitError, match=r"^cannot reach 127\.0\.0\.1:\d+: connection refused \(is sshd running"):
        deploy(opts)
    _nothing_left(tmp_path)


def test_refused_key(art: dict, tmp_path: Path, sshd: Sshd) -> None:
    opts = options(sshd, art, tmp_path / "device", tmp_path / "results", identity=str(sshd.stranger))
    with pytest.raises(DvitError, match=r"refused the key .*stranger_ed25519: add its public key to "
                                        r"~/\.ssh/authorized_keys on the device"):
        deploy(opts)
    _nothing_left(tmp_path)


def test_unknown_target(art: dict, tmp_path: Path, sshd: Sshd) -> None:
    opts = options(sshd, art, tmp_path / "device", tmp_path / "results", target="orin-nanoo")
    with pytest.raises(ConfigError, match=r"unknown target 'orin-nanoo' \(did you mean orin-nano\?\)"):
        deploy(opts)
    _nothing_left(tmp_path)


def test_full_disk_on_the_device(art: dict, tmp_path: Path, sshd: Sshd) -> None:
    opts = options(sshd, art, tmp_path / "device", tmp_path / "results", need_disk_mb=2**30)
    with pytest.raises(DvitError, match=r"^device has \d+ MB free in .*/device, the bundle needs 1073741824 MB: "
                                        r"free space or pass --remote-dir$"):
        deploy(opts)
    _nothing_left(tmp_path)


def test_bad_options(art: dict, tmp_path: Path, sshd: Sshd) -> None:
    opts = options(sshd, art, tmp_path / "device", tmp_path / "results")
    with pytest.raises(ConfigError, match="--remote-dir 'a b': use a plain path"):
        deploy(dataclasses.replace(opts, remote_dir="a b"))
    with pytest.raises(ConfigError, match="--only-validate needs --reference"):
        deploy(dataclasses.replace(opts, reference=None, only_validate=True))
    with pytest.raises(ConfigError, match="--identity .*: no such key file"):
        deploy(dataclasses.replace(opts, identity=str(tmp_path / "nokey")))
    with pytest.raises(DvitError, match="--no-build reuses the engines of the current release, but 127.0.0.1 has "
                                        "none"):
        deploy(dataclasses.replace(opts, build=False))
    with pytest.raises(TypeError, match="latency_args is a sequence"):
        dataclasses.replace(opts, latency_args="--duration-s 5")  # type: ignore[arg-type]
    _nothing_left(tmp_path)


# ---------------------------------------------------------------------------------------------- the fit check
def facts(**sections: str) -> str:
    return "".join(f"\n@@{k}\n{v}\n" for k, v in sections.items())


DF_120MB = """Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/mmcblk0p1    59313376 59190496    122880     100% /"""
JETSON_TOOLS = ("cmake=/usr/bin/cmake\nrsync=/usr/bin/rsync\nsha256sum=/usr/bin/sha256sum\npython3=/usr/bin/python3\n"
                "nvcc=/usr/local/cuda/bin/nvcc\nnvpmodel=/usr/sbin/nvpmodel\njetson_clocks=/usr/bin/jetson_clocks\n"
                "tegrastats=/usr/bin/tegrastats\nnvidia-smi=")
MEMINFO = "MemTotal:        7990000 kB\nMemFree:          900000 kB\nMemAvailable:    5200000 kB\n" \
          "SwapTotal:       3995000 kB\nSwapFree:        3995000 kB"

ORIN_NANO_JP51 = facts(
    home="/home/nvidia", uname="Linux 5.10.120-tegra aarch64",
    nv_tegra_release="# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  "
                     "1 19:57:35 UTC 2023",
    model="NVIDIA Orin Nano Developer Kit", l4t_core="35.4.1-20230801124926", jetpack="",
    python="/usr/bin/python3\nPython 3.8.10", tensorrt_python="8.5.2.2", tensorrt_rtx_python="",
    libnvinfer="ii  libnvinfer-bin 8.5.2-1+cuda11.4\nii  libnvinfer8 8.5.2-1+cuda11.4",
    nvcc="/usr/local/cuda/bin/nvcc\nnvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2022 NVIDIA Corporation\n"
         "Built on Sun_Oct_23_22:16:07_PDT_2022\nCuda compilation tools, release 11.4, V11.4.315\n"
         "Build cuda_11.4.r11.4/compiler.31964100_0",
    meminfo=MEMINFO, nproc="6",
    df="/home/nvidia\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n"
       "/dev/mmcblk0p1    59313376 45187616  11076176      81% /",
    tools=JETSON_TOOLS, cmake="cmake version 3.16.3", nvpmodel="NV Power Mode: 15W\n0",
    jetson_clocks="SOC family:tegra234  Machine:NVIDIA Orin Nano Developer Kit\nOnline CPUs: 0-5\n"
                  "GPU MinFreq=306000000 MaxFreq=625000000 CurrentFreq=306000000\n"
                  "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=0\nNV Power Mode: 15W",
    trt_headers="/usr/include/aarch64-linux-gnu", deploy_state="")

ORIN_NANO_JP62 = facts(
    home="/home/nvidia", uname="Linux 5.15.148-tegra aarch64",
    nv_tegra_release="# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  "
                     "8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot",
    model="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", l4t_core="36.4.3-20250107174145",
    jetpack="6.2+b77", python="/usr/bin/python3\nPython 3.10.12", tensorrt_python="10.3.0", tensorrt_rtx_python="",
    libnvinfer="ii  libnvinfer-bin 10.3.0.30-1+cuda12.5\nii  libnvinfer10 10.3.0.30-1+cuda12.5",
    nvcc="/usr/local/cuda/bin/nvcc\nCuda compilation tools, release 12.6, V12.6.68\n"
         "Build cuda_12.6.r12.6/compiler.34714021_0",
    meminfo=MEMINFO, nproc="6",
    df="/home/nvidia\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n"
       "/dev/nvme0n1p1   245016792 41206580 191271404      18% /",
    tools=JETSON_TOOLS, cmake="cmake version 3.22.1", nvpmodel="NV Power Mode: MAXN_SUPER\n2",
    jetson_clocks="GPU MinFreq=306000000 MaxFreq=1020000000 CurrentFreq=306000000\n"
                  "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=665600000\nNV Power Mode: MAXN_SUPER",
    trt_headers="/usr/include/aarch64-linux-gnu", deploy_state="releases/20250101-120000\nengines_dir=yes")


def fit(text: str, target: str = "orin-nano", need: int = 100 << 20, **kw: object) -> preflight.Fit:
    kw.setdefault("needs_plugin", True)
    return preflight.check_fit(preflight.parse_facts(text), load_target(target), host="nano", need_bytes=need,
                               remote_dir="~/dvit-deploy", **kw)  # type: ignore[arg-type]


def test_jetpack5_device_does_not_fit_orin_nano() -> None:
    f = preflight.parse_facts(ORIN_NANO_JP51)
    assert (f.l4t, f.jetpack, f.tensorrt, f.libnvinfer, f.cuda) == ("35.4.1", "5.1.2", "8.5.2.2", "8.5.2", "11.4.315")
    assert (f.board, f.compute_capability, f.power_mode, f.power_mode_id) == ("Orin", 87, "15W", 0)
    assert f.disk_free_kb == 11076176 and f.mem_available_kb == 5200000 and f.cpus == 6
    result = fit(ORIN_NANO_JP51)
    assert result.errors[0] == ("this Orin runs JetPack 5.1.2 with TensorRT 8.5: target orin-nano needs TensorRT 10.3 "
                                "or newer (JetPack 6.1+): flash JetPack 6.1 or newer")
    assert any("Python 3.8.10" in e for e in result.errors)
    assert any("GPU clocks are not locked on nano (306-625 MHz" in w for w in result.warnings)


def test_jetpack62_device_fits_orin_nano_with_warnings_only() -> None:
    f = preflight.parse_facts(ORIN_NANO_JP62)
    assert (f.l4t, f.jetpack, f.jetpack_source, f.tensorrt) == ("36.4.3", "6.2", "nvidia-jetpack package", "10.3.0")
    assert f.current_release == "releases/20250101-120000" and f.current_has_engines
    assert (f.clocks.gpu_min_mhz, f.clocks.gpu_max_mhz, f.clocks.locked) == (306.0, 1020.0, False)
    result = fit(ORIN_NANO_JP62)
    assert result.ok, result.errors
    assert result.warnings == [("GPU clocks are not locked on nano (306-1020 MHz, jetson_clocks --show): latency "
                                "will vary; run `sudo jetson_clocks` before deploying")]
    locked = ORIN_NANO_JP62.replace("GPU MinFreq=306000000", "GPU MinFreq=1020000000")
    assert fit(locked).warnings == []


def test_jetson_tools_absence_is_reported_not_faked() -> None:
    text = ORIN_NANO_JP62.replace("tegrastats=/usr/bin/tegrastats", "tegrastats=").replace(
        "jetson_clocks=/usr/bin/jetson_clocks", "jetson_clocks=")
    text = text.replace("GPU MinFreq=306000000 MaxFreq=1020000000 CurrentFreq=306000000\n", "")
    f = preflight.parse_facts(text)
    assert f.tools["tegrastats"] is None and f.clocks.locked is None
    warnings = fit(text).warnings
    assert "tegrastats not found on nano: no power, temperature or clock figures" in warnings
    assert "jetson_clocks not found on nano: cannot tell whether clocks are locked" in warnings


def test_other_mismatches_stop_with_one_line_each() -> None:
    desktop = facts(uname="Linux 6.8.0-45-generic x86_64", python="/usr/bin/python3\nPython 3.12.3",
                    tensorrt_rtx_python="1.7.1.116", nvidia_smi="NVIDIA GeForce RTX 2080 Ti, 7.5, 550.120, 11264 MiB",
                    tools="rsync=/usr/bin/rsync\nsha256sum=/usr/bin/sha256sum\ncmake=/usr/bin/cmake", meminfo=MEMINFO,
                    df="/home/u\n" + DF_120MB.replace("122880", "99999999"))
    jetson_target = fit(desktop, "orin-nano")
    assert jetson_target.errors == [jetson_target.errors[0]] and "is not a Jetson" in jetson_target.errors[0]
    turing = fit(desktop, "desktop-rtx", needs_plugin=False)
    assert any("GPU is sm_75 (compute capability 7.5, nvidia-smi (NVIDIA GeForce RTX 2080 Ti)), target desktop-rtx "
               "builds for sm_80" in e for e in turing.errors)
    rtx_on_jetson = fit(ORIN_NANO_JP62, "desktop-rtx")
    assert "TensorRT for RTX does not run on Jetson" in rtx_on_jetson.errors[0]
    no_bindings = ORIN_NANO_JP62.replace("\n@@tensorrt_python\n10.3.0\n", "\n@@tensorrt_python\n\n")
    assert any("no Python bindings" in e and "python3-libnvinfer" in e for e in fit(no_bindings).errors)
    thor = fit(ORIN_NANO_JP62, "thor")
    assert any("TensorRT 10.3: target thor needs TensorRT 10.13 or newer (JetPack 7.0+)" in e for e in thor.errors)


def test_disk_check_on_real_df_output() -> None:
    assert preflight.parse_df(DF_120MB) == (122880, "/")
    wrapped = ("Filesystem                                  1024-blocks    Used Available Capacity Mounted on\n"
               "/dev/mapper/ubuntu--vg-ubuntu--lv\n                                              102626232 "
               "52345120  45021928      54% /home")
    assert preflight.parse_df(wrapped) == (45021928, "/home")
    assert preflight.check_disk(122880, 480 << 20, "~/dvit-deploy") == (
        "device has 120 MB free in ~/dvit-deploy, the bundle needs 480 MB: free space or pass --remote-dir")
    assert preflight.check_disk(122880, 100 << 20, "~/dvit-deploy") is None
    full = ORIN_NANO_JP62.replace("/dev/nvme0n1p1   245016792 41206580 191271404      18% /",
                                  DF_120MB.splitlines()[1])
    assert fit(full, need=480 << 20).errors == [
        "device has 120 MB free in ~/dvit-deploy, the bundle needs 480 MB: free space or pass --remote-dir"]


def test_step_table_and_layout() -> None:
    assert remote.STEP_NAMES[-2:] == ("switch", "prune") and len(set(remote.STEP_NAMES)) == len(remote.STEP_NAMES)
    assert remote.parse_commands("positional arguments:\n  COMMAND\n    train      x\n    plugin-pass\n"
                                 "               y\n    validate   z\n") == ["train", "plugin-pass", "validate"]
    home = remote.Layout.make("~/dvit-deploy", "20250101-000000")
    assert (home.root, home.rsync_root) == ("$HOME/dvit-deploy", "dvit-deploy")
    assert remote.Layout.make("/data/d/", "r").rel == "/data/d/releases/r"
    for bad in ("a b", "x;rm", "~", "/", "../up", "a/../b"):
        with pytest.raises(ValueError):
            remote.Layout.make(bad, "r")


def test_device_side_imports_without_torch_timm_modelopt() -> None:
    from test_contract import BLOCKER

    code = BLOCKER + (
        "import argparse, pipeline.deploy as d\n"
        "import pipeline.deploy.ssh, pipeline.deploy.preflight, pipeline.deploy.bundle, pipeline.deploy.remote\n"
        "import pipeline.deploy.tegrastats\n"
        "d.configure(argparse.ArgumentParser())\n"
        "try:\n    import torch\nexcept ImportError as e:\n    print('blocked:', e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "blocked: torch is blocked" in r.stdout


# ---------------------------------------------------------------------------------------------- the device's Python
PACKAGES_NO_CUDA = ("numpy=2.2.6\ntqdm=4.70.1\nrich=15.0.0\ntomli=2.2.1\nonnx=\n"
                    "onnxruntime=\nonnxruntime-extensions=\ncuda-python=")


def test_device_python_packages_are_checked_for_what_the_deploy_runs() -> None:
    """Issue 16.1: a JetPack 6 Orin (GPU, CUDA 12.6) runs the engines: its interpreter needs the cuda-python of
    CUDA 12 (not ONNX Runtime); one without it is stopped naming it and the extra; the deploy's own venv installs
    exactly `.[device,cuda12]`."""
    text = ORIN_NANO_JP62 + facts(python_packages=PACKAGES_NO_CUDA, venv="ok")
    run = {"validating": True, "timing": True}
    given = fit(text, remote_python="/opt/dvit/bin/python", **run)
    assert given.errors == [(
        '/opt/dvit/bin/python on nano lacks cuda-python (cuda-python: engines run with cuda-python for CUDA 12): '
        'install them there (`/opt/dvit/bin/python -m pip install ".[device,cuda12]"` from a dvit-edge checkout), '
        "or leave out --remote-python (the deploy's own venv installs them)")]
    assert fit(text.replace("cuda-python=", "cuda-python=12.6.2.post1"), remote_python="/p", **run).ok
    wrong_major = fit(text.replace("cuda-python=", "cuda-python=13.5.0"), remote_python="/p", **run)
    assert wrong_major.errors == [('/p on nano has cuda-python 13.5.0, the device runs CUDA 12.6.68: `/p -m pip '
                                   'install ".[cuda12]"` (cuda-python\'s major must be the device\'s CUDA major)')]
    managed = fit(text, **run)
    assert managed.ok and "the deploy's venv on nano gets `pip install .[device,cuda12]`" in managed.notes
    assert preflight.requirements(preflight.parse_facts(text), host="nano", uses_plugin=True, validating=True,
                                  timing=True).spec == "device,cuda12"
    no_venv = fit(text.replace("\n@@venv\nok\n", "\n@@venv\n\n"), **run)
    assert any("cannot make a venv" in e and "python3-venv" in e for e in no_venv.errors)


def test_cuda_13_needs_python_311_and_no_gpu_needs_onnx_runtime() -> None:
    thor_py310 = facts(
        home="/home/nvidia", uname="Linux 6.8.12-tegra aarch64",
        nv_tegra_release="# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x",
        model="NVIDIA Jetson AGX Thor Developer Kit", python="/usr/bin/python3.10\nPython 3.10.12",
        tensorrt_python="10.13.3.9", nvcc="/usr/local/cuda/bin/nvcc\nCuda compilation tools, release 13.0, V13.0.48",
        meminfo=MEMINFO, nproc="14", tools=JETSON_TOOLS, trt_headers="/usr/include/aarch64-linux-gnu",
        python_packages=PACKAGES_NO_CUDA, venv="ok")
    f = preflight.parse_facts(thor_py310)
    req = preflight.requirements(f, host="thor", uses_plugin=False, validating=True, timing=True)
    assert req.errors and "cuda-bindings 13, the cuda13 extra) needs Python 3.11 or newer" in req.errors[0]
    py312 = preflight.parse_facts(thor_py310.replace("Python 3.10.12", "Python 3.12.3"))
    assert preflight.requirements(py312, host="thor", uses_plugin=False, validating=True,
                                  timing=True).spec == "device,cuda13"
    # this machine's kind of device: no GPU, so ONNX Runtime validates (and onnxruntime-extensions for plugins)
    desktop = preflight.parse_facts(facts(uname="Linux 6.1.0 x86_64", python="/usr/bin/python3\nPython 3.11.2",
                                          tensorrt_rtx_python="1.7.1.116", python_packages=PACKAGES_NO_CUDA))
    req = preflight.requirements(desktop, host="pc", uses_plugin=True, validating=True, timing=True)
    assert req.spec == "device,onnxruntime" and not req.errors
    assert [n.package for n in req.needs][-3:] == ["onnx", "onnxruntime", "onnxruntime-extensions"]
    # nothing to validate (no --reference), no GPU: only the device side
    assert preflight.requirements(desktop, host="pc", uses_plugin=True, validating=False, timing=True).spec == "device"


def test_a_wrong_remote_python_is_named_not_tensorrt() -> None:
    """Issue 16.6: an --remote-python path with no interpreter behind it is reported as that, not as a missing
    TensorRT (whose bindings cannot be looked for without an interpreter)."""
    text = ORIN_NANO_JP62.replace("\n@@python\n/usr/bin/python3\nPython 3.10.12\n", "\n@@python\n\n").replace(
        "\n@@tensorrt_python\n10.3.0\n", "\n@@tensorrt_python\n\n")
    for kw in ({"remote_python_given": True}, {"remote_python": "/opt/nope/bin/python"}):
        result = fit(text, **kw)
        assert result.errors[0].startswith("nano has no interpreter at --remote-python"), result.errors
        assert not any("TensorRT" in e for e in result.errors), result.errors
    assert "--remote-python /opt/nope/bin/python: pass the path" in fit(text, remote_python="/opt/nope/bin/python").errors[0]


def test_the_success_line_shows_the_remote_path_as_the_device_has_it() -> None:
    from pipeline.deploy import _expand_home

    assert _expand_home("$HOME/dvit-deploy", "/home/nvidia") == "/home/nvidia/dvit-deploy"
    assert _expand_home("/data/dvit-deploy", "/home/nvidia") == "/data/dvit-deploy"
    assert _expand_home("$HOME/dvit-deploy", None) == "$HOME/dvit-deploy"
