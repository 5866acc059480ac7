"""The image itself, built by scripts/build-image.sh (podman, a debootstrapped Debian base, no
registry) and run the way a pod runs it: its own non-root user, a read-only root filesystem with a
tmpfs /tmp, ConfigMap directories written the way kubelet writes them, against the emulator on
the host. Skipped where podman cannot run; with CI=true that is a failure. Also: how the build
script finds the Debian mirror for the base."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging_support import REPO, package_version

from lora_syncer.kubelet import ConfigMapVolume

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
# runc cannot raise podman's default limits in some sandboxes: every container gets explicit ones.
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1000:1000")
BASE_IMAGE = "localhost/lora-syncer-base:bookworm"  # scripts/build-image.sh's default base tag
UID = 65532
GRACE = 15  # podman stop's timeout: SIGTERM, then SIGKILL (exit 137) after this many seconds
ALIAS = "small-segment-lora"
V1, V2 = "small-segment-lora-v1", "small-segment-lora-v2"
SOURCE_V1, SOURCE_V2 = "ttt421/nec119-small-segment-lora", "ttt421/nec119-small-segment-lora-2"


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI=true, where the image must be built and run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the image test must run)")
    pytest.skip(reason)


def _podman_problem() -> str | None:
    """Why rootful podman with runc cannot run here, or None."""
    if os.geteuid() != 0:
        return "the image test needs root (rootful podman, debootstrap for the base)"
    sbin_path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in ("podman", "runc") if not shutil.which(t, path=sbin_path)]
    if missing:
        return f"{' and '.join(missing)} missing: apt-get install podman runc debootstrap (or run scripts/test.sh as root)"
    proc = subprocess.run([*PODMAN, "info"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        return f"podman cannot run here: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    base_missing = _podman("image", "exists", BASE_IMAGE).returncode != 0
    if base_missing and not shutil.which("debootstrap", path=sbin_path) and not shutil.which("apt-get"):
        return f"neither {BASE_IMAGE} nor debootstrap to make it: install debootstrap"
    return None


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http(
    url: str, body: dict[str, Any] | None = None, timeout: float = 5
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _eventually(check: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def image() -> str:
    """The image of this tree: built by scripts/build-image.sh, or reused when already built."""
    problem = _podman_problem()
    if problem:
        _unavailable(problem)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, (
        f"scripts/build-image.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "image", proc.stdout
    assert "image's own layers:" in proc.stdout
    return last[1]


@pytest.fixture
def emulator() -> Iterator[str]:
    """`lora-syncer emulator` on the host, on an ephemeral port; its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_syncer", "emulator", "--host", "127.0.0.1", "--port", str(port),
         "--log-format", "json", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _eventually(
            lambda: proc.poll() is None and _http(url + "/health")[0] == 200, "the emulator's /health"
        )
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _adapters(*entries: tuple[str, str]) -> str:
    models = "".join(f"    - id: {i}\n      source: {s}\n" for i, s in entries)
    return f"vLLMLoRAConfig:\n  name: image-test\n  ensureExist:\n    models:\n{models}"


def _rules(weights: dict[str, int]) -> str:
    targets = "".join(f"    - {{modelRewrite: {name}, weight: {w}}}\n" for name, w in weights.items())
    return (
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceModelRewrite\n"
        "metadata: {name: image-test}\nspec:\n  rules:\n"
        f"  - matches: [{{model: {{type: Exact, value: {ALIAS}}}}}]\n    targets:\n{targets}"
    )


def _loaded(emulator: str) -> set[str]:
    _, _, body = _http(emulator + "/v1/models")
    return {m["id"] for m in json.loads(body)["data"] if m.get("parent")}


def _served_through_proxy(proxy: str) -> str:
    status, headers, body = _http(
        proxy + "/v1/chat/completions",
        {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
    )
    assert status == 200, body
    assert json.loads(body)["model"] == headers["x-lora-syncer-served-model"]
    return headers["x-lora-syncer-served-model"]


@pytest.mark.slow
def test_image_runs_read_only_as_non_root_syncs_proxies_and_stops_cleanly(
    image: str, emulator: str, tmp_path: Path
) -> None:
    """The built image, as UID 65532 on a read-only root, loads the mounted ConfigMap's adapters,
    turns ready, rewrites through the proxy, follows a kubelet `..data` swap, exits 0 on SIGTERM
    within the grace period and leaves nothing written outside /tmp."""
    config, rules = ConfigMapVolume(tmp_path / "config"), ConfigMapVolume(tmp_path / "rules")
    config.write({"configmap.yaml": _adapters((V1, SOURCE_V1))})
    rules.write({"rules.yaml": _rules({V1: 100})})
    metrics_port, proxy_port = _free_port(), _free_port()
    name = f"lora-syncer-test-{uuid.uuid4().hex[:8]}"
    # How the pod runs it: its own user, read-only root, a tmpfs /tmp, the ConfigMaps read-only.
    options = (
        "--network", "host", "--read-only", "--tmpfs", "/tmp", *ULIMITS,
        "-v", f"{config.directory}:/config:ro", "-v", f"{rules.directory}:/rules:ro",
    )  # fmt: skip
    run = _podman(
        "run", "-d", "--name", name, *options, image, "run", "--server", emulator, "--rules", "/rules/rules.yaml",
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--proxy-host", "127.0.0.1", "--proxy-port", str(proxy_port),
        "--health-check-interval", "0.2", "--reconcile-trigger", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    metrics, proxy = f"http://127.0.0.1:{metrics_port}", f"http://127.0.0.1:{proxy_port}"
    try:
        # Its own user, not root; the image's default environment reads /config/configmap.yaml.
        assert (
            _podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
            == f"{UID}:{UID}"
        )
        pid = _podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        uids = next(
            ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:")
        )
        assert uids.split()[1:] == [str(UID)] * 4, uids
        # A control container with the same options that writes nothing: `lora-syncer --version`.
        version = _podman("run", "--name", f"{name}-control", *options, image, "--version")
        # The image runs the proxy compiled by mypyc (the Dockerfile's build stops otherwise).
        assert version.stdout.split() == ["lora-syncer", package_version(), "(proxy:", "compiled)"], (
            version.stdout + version.stderr
        )

        _eventually(lambda: _http(metrics + "/readyz")[0] == 200, "/readyz 200")
        assert _loaded(emulator) == {V1}
        assert _served_through_proxy(proxy) == V1

        # A ConfigMap update as kubelet makes it: v2 declared, then all traffic to v2.
        config.write({"configmap.yaml": _adapters((V1, SOURCE_V1), (V2, SOURCE_V2))})
        _eventually(lambda: _loaded(emulator) == {V1, V2}, "v2 loaded after the ..data swap")
        rules.write({"rules.yaml": _rules({V1: 0, V2: 100})})
        _eventually(lambda: _served_through_proxy(proxy) == V2, "the proxy following the rules swap")

        stop = _podman("stop", "-t", str(GRACE), name, timeout=GRACE + 60)
        assert stop.returncode == 0, stop.stderr
        state = json.loads(_podman("inspect", "--format", "{{json .State}}", name).stdout)
        # 0, not 137: it exited on SIGTERM before podman's SIGKILL at the end of the grace period.
        assert state["ExitCode"] == 0, _podman("logs", "--tail", "30", name).stderr
        assert _loaded(emulator) == {V1, V2}, "nothing is unloaded on shutdown"
        logs = _podman("logs", name)
        assert "Traceback" not in logs.stdout + logs.stderr

        # Nothing written outside /tmp: the container's changes are exactly the control's (the mount
        # points podman itself makes, /config, /rules and /etc for the host network's files).
        diff, control = _podman("diff", name), _podman("diff", f"{name}-control")
        assert diff.returncode == control.returncode == 0, diff.stderr + control.stderr
        assert sorted(diff.stdout.splitlines()) == sorted(control.stdout.splitlines())
        assert not [
            ln for ln in diff.stdout.splitlines() if ln.split()[-1] not in {"/config", "/rules", "/etc"}
        ]
    finally:
        _podman("rm", "-f", "-t", "0", name, f"{name}-control")


DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sources.list.d/debian.sources": DEB822}, "http://mirror.example/debian"),
        (
            {"sources.list.d/debian.sources": "Types: deb\nURIs: http://off.example/d\nSuites: bookworm\nEnabled: no\n\n"
             + DEB822.replace("mirror.example", "on.example")},
            "http://on.example/debian",
        ),
        (
            {"sources.list": "deb http://mirror.example/debian-security bookworm-security main\n"
             "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"},
            "http://mirror.example/debian",
        ),
        ({"sources.list": "deb-src http://mirror.example/debian bookworm main\n"}, None),
    ],
    ids=["deb822", "deb822-disabled-stanza", "one-line-with-options", "no-binary-source"],
)  # fmt: skip
def test_build_script_reads_the_mirror_from_apt_sources(
    files: dict[str, str], expected: str | None, tmp_path: Path
) -> None:
    """build-image.sh takes debootstrap's mirror from apt's sources (either format): the stanza or line
    serving the suite itself, never -security, a disabled stanza or a deb-src line; none is an error."""
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "LORA_SYNCER_DEBIAN_MIRROR"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh"), "--print-mirror"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**env, "LORA_SYNCER_APT_DIR": str(tmp_path)},
    )
    if expected is None:
        assert proc.returncode == 1
        assert "set LORA_SYNCER_DEBIAN_MIRROR" in proc.stderr
    else:
        assert (proc.returncode, proc.stdout.strip()) == (0, expected), proc.stderr
