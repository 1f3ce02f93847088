"""dutlab-run end to end: real QEMU (TCG), real kernel + busybox initramfs, real HTTP."""
# ruff: noqa: F811 - the fixtures are imported from dispatcher_fixtures and used as arguments

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dispatcher_fixtures import (  # noqa: F401 - fixtures are used by name
    PROMPT,
    DutlabRun,
    HttpServer,
    assets_for,
    dutlab_run,
    http_server,
    inline_definition,
    manifest,
    qemu_job,
    render_device,
    wait_for_log,
)

pytestmark = pytest.mark.qemu

SMOKE_STEPS = [
    "lava-test-case uname --shell uname -a",
    "lava-test-case false-case --shell false",
    "lava-test-case skipped --result skip",
    "lava-test-case speed --result pass --measurement 12.5 --units MB/s",
]


def cases(records: list[dict]) -> list[tuple]:
    return [(r["case"], r["result"], r.get("measurement"), r.get("units")) for r in records]


def test_inline_results_complete_with_exactly_those_results(dutlab_run: DutlabRun) -> None:
    job = qemu_job("amd64", [inline_definition("smoke", SMOKE_STEPS)])
    out = dutlab_run.run(job, render_device("amd64"), job_id=7)
    assert out.returncode == 0, out.stdout
    assert out.result == {"result": "pass"}
    assert cases(out.suite("0_smoke")) == [("uname", "pass", None, None), ("false-case", "fail", None, None),
                                           ("skipped", "skip", None, None), ("speed", "pass", 12.5, "MB/s")]
    lava = {r["case"]: r for r in out.suite("lava")}
    assert lava["0_smoke"]["result"] == "pass" and lava["0_smoke"]["uuid"].startswith("7_")
    assert out.results[-1] == {"definition": "lava", "case": "job", "result": "pass"}
    assert out.records[-1]["lvl"] == "results"
    assert (out.output_dir / "description.yaml").exists()
    assert "Complete" in out.stdout and "0_smoke: 1 fail, 2 pass, 1 skip" in out.stdout
    assert any(m == "Linux dutlab" or m.startswith("Linux dutlab ") for m in out.messages("target"))


def test_lava_test_raise_fails_the_job_with_a_test_error(dutlab_run: DutlabRun) -> None:
    steps = ["lava-test-case before --result pass", "lava-test-raise the disk is missing",
             "lava-test-case after --result pass"]
    out = dutlab_run.run(qemu_job("amd64", [inline_definition("raise", steps)]), render_device("amd64"))
    assert out.returncode == 1
    assert out.result == {"result": "fail", "error_type": "Test",
                          "error_msg": "lava-test-raise in 0_raise: the disk is missing"}
    assert cases(out.suite("0_raise")) == [("before", "pass", None, None)]


def test_wrong_checksum_names_the_url_and_both_checksums(dutlab_run: DutlabRun, http_server: HttpServer) -> None:
    shutil.copy(assets_for("amd64") / "vmlinuz", http_server.root / "vmlinuz")
    url = f"{http_server.url}/vmlinuz"
    images = {"kernel": {"url": url, "sha256sum": "0" * 64, "image_arg": "-kernel {kernel}"}}
    out = dutlab_run.run(qemu_job("amd64", images=images), render_device("amd64"))
    assert out.returncode == 1
    actual = hashlib.sha256((http_server.root / "vmlinuz").read_bytes()).hexdigest()
    assert out.result["error_type"] == "Job"
    assert out.result["error_msg"] == (f"checksum mismatch for {url}: the job expects sha256 {'0' * 64}, "
                                       f"the downloaded file has {actual}")
    assert out.qemu_pid() is None


def test_second_job_with_the_same_kernel_uses_the_cache(dutlab_run: DutlabRun, http_server: HttpServer,
                                                         tmp_path: Path) -> None:
    data = (assets_for("amd64") / "vmlinuz").read_bytes()
    (http_server.root / "vmlinuz.xz").write_bytes(subprocess.run(["xz", "-1", "-T2", "-c"], input=data,
                                                                 capture_output=True, check=True).stdout)
    digest = hashlib.sha512((http_server.root / "vmlinuz.xz").read_bytes()).hexdigest()
    images = {"kernel": {"url": f"{http_server.url}/vmlinuz.xz", "sha512sum": digest, "compression": "xz",
                         "image_arg": "-kernel {kernel}"}}
    job = qemu_job("amd64", images=images)
    job["actions"] = job["actions"][:1]  # deploy only
    first = dutlab_run.run(job, render_device("amd64"))
    second = dutlab_run.run(job, render_device("amd64"))
    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    assert http_server.requests == ["/vmlinuz.xz"]
    assert any(m.startswith("progress 100 %") or m.startswith("downloaded ") for m in first.messages("info"))
    assert any("in the worker cache" in m for m in second.messages("info"))
    assert not list((tmp_path / "work" / "tmp").iterdir())  # finalize removed the scratch dirs


def test_missing_url_is_an_infrastructure_error_naming_url_and_status(dutlab_run: DutlabRun,
                                                                     http_server: HttpServer) -> None:
    url = f"{http_server.url}/nothing-here"
    out = dutlab_run.run(qemu_job("amd64", images={"kernel": {"url": url}}), render_device("amd64"))
    assert out.result == {"result": "fail", "error_type": "Infrastructure",
                          "error_msg": f"downloading {url} failed: HTTP 404 File not found"}


def test_kernel_panic_ends_the_boot_with_a_clear_error(dutlab_run: DutlabRun) -> None:
    job = qemu_job("amd64", context={"extra_kernel_args": manifest("amd64")["panic"]["kernel_arg"]})
    out = dutlab_run.run(job, render_device("amd64"))
    assert out.returncode == 1
    assert out.result["error_type"] == "Job"
    assert out.result["error_msg"].startswith("the boot failed: 'Kernel panic - not syncing")
    boot = next(r for r in out.suite("lava") if r["case"] == "boot-qemu-image")
    assert boot["result"] == "fail" and float(boot["duration"]) < 30


def test_garbage_kernel_quotes_qemu(dutlab_run: DutlabRun, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(2_000_000))
    images = {"kernel": {"url": f"file://{garbage}", "image_arg": "-kernel {kernel}"},
              "initrd": {"url": f"file://{assets_for('amd64')}/initramfs.cpio.gz", "image_arg": "-initrd {initrd}"}}
    out = dutlab_run.run(qemu_job("amd64", images=images), render_device("amd64"))
    assert out.result["error_type"] == "Job"
    assert out.result["error_msg"].startswith("QEMU exited immediately while waiting for the shell prompt: ")
    assert out.result["error_msg"].endswith("(exit code 1)")


def test_boot_timeout_names_the_prompt(dutlab_run: DutlabRun) -> None:
    job = qemu_job("amd64", boot={"prompts": ["no-such-prompt# "], "timeout": {"seconds": 8}})
    out = dutlab_run.run(job, render_device("amd64"))
    assert out.result["error_type"] == "Timeout"
    assert out.result["error_msg"].startswith("auto-login-action: the shell prompt did not appear within ")
    assert "(matching 'no-such-prompt# '; last console output: " in out.result["error_msg"]


def test_sigterm_during_boot_cancels_and_leaves_no_qemu(dutlab_run: DutlabRun) -> None:
    proc, output_dir = dutlab_run.start(qemu_job("amd64", [inline_definition("smoke", SMOKE_STEPS)]),
                                        render_device("amd64"))
    wait_for_log(output_dir, "QEMU started, pid ")
    os.kill(proc.pid, signal.SIGTERM)
    out = dutlab_run.finish(proc, output_dir, timeout=60)
    assert out.result == {"result": "fail", "error_type": "Canceled",
                          "error_msg": "the job was canceled (SIGTERM received)"}
    pid = out.qemu_pid()
    assert pid and not Path(f"/proc/{pid}").exists()
    assert any(m.startswith("start: ") and "finalize" in m for m in out.messages("info"))


def test_git_definition_runs_at_the_requested_revision(dutlab_run: DutlabRun, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "defs").mkdir(parents=True)
    (repo / "defs" / "check.yaml").write_text(
        "metadata: {format: Lava-Test Test Definition 1.0, name: check}\n"
        "params: {WHO: nobody}\n"
        "run:\n  steps:\n  - lava-test-case version-$(cat version) --result pass\n"
        "  - lava-test-case who-$WHO --result pass\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "version").write_text("one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    first = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "version").write_text("two\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    definition = {"from": "git", "name": "check", "repository": f"file://{repo}", "revision": first,
                  "path": "defs/check.yaml", "parameters": {"WHO": "world"}}
    out = dutlab_run.run(qemu_job("amd64", [definition]), render_device("amd64"))
    assert out.returncode == 0, out.stdout
    assert cases(out.suite("0_check")) == [("version-one", "pass", None, None), ("who-world", "pass", None, None)]
    endrun = next(r for r in out.suite("lava") if r["case"] == "0_check")
    assert endrun["commit_id"] == first and endrun["repository"] == f"file://{repo}"


def test_arm64_boots_and_runs_a_test(dutlab_run: DutlabRun) -> None:
    steps = ["lava-test-case arch --shell 'uname -m | grep -qx aarch64'"]
    out = dutlab_run.run(qemu_job("arm64", [inline_definition("arch", steps)]), render_device("arm64"))
    assert out.returncode == 0, out.stdout
    assert cases(out.suite("0_arch")) == [("arch", "pass", None, None)]
    assert any(m.startswith("QEMU command: qemu-system-aarch64 ") for m in out.messages("info"))


def test_auto_login_answers_login_and_password(dutlab_run: DutlabRun) -> None:
    login = manifest("amd64")["login"]
    boot = {"auto_login": {"login_prompt": login["login_prompt"], "username": login["username"],
                           "password_prompt": login["password_prompt"], "password": login["password"],
                           "login_commands": ["cd /tmp"]}}
    job = qemu_job("amd64", [inline_definition("login", ["lava-test-case whoami --shell 'test $(id -u) = 0'"])],
                   context={"extra_kernel_args": login["kernel_arg"]}, boot=boot)
    job["actions"][1]["boot"]["prompts"] = [r"dutlab:\S*# "]
    out = dutlab_run.run(job, render_device("amd64"))
    assert out.returncode == 0, out.stdout
    assert out.messages("input")[:3] == [login["username"], "[password]", "cd /tmp"]
    assert cases(out.suite("0_login")) == [("whoami", "pass", None, None)]


def test_overlay_inside_the_initramfs(dutlab_run: DutlabRun) -> None:
    assets = assets_for("amd64")
    images = {"kernel": {"url": f"file://{assets}/vmlinuz", "image_arg": "-kernel {kernel}"},
              "initrd": {"url": f"file://{assets}/initramfs.cpio.gz", "compression": "gz", "format": "cpio.newc",
                         "image_arg": "-initrd {initrd}", "overlays": {"lava": True}}}
    steps = ["lava-test-case in-rootfs --shell 'grep -q \" /lava-3 \" /proc/mounts && exit 1 || exit 0'"]
    out = dutlab_run.run(qemu_job("amd64", [inline_definition("ramdisk", steps)], images=images),
                         render_device("amd64"), job_id=3)
    assert out.returncode == 0, out.stdout
    command = next(m for m in out.messages("info") if m.startswith("QEMU command: "))
    assert "-drive" not in command
    assert cases(out.suite("0_ramdisk")) == [("in-rootfs", "pass", None, None)]


def test_overlay_over_the_serial_console_without_a_usable_drive(dutlab_run: DutlabRun) -> None:
    # The initramfs has no IDE driver: the overlay drive is invisible, so the fallback must send it.
    job = qemu_job("amd64", [inline_definition("serial", ["lava-test-case sent --result pass"])],
                   context={"guestfs_interface": "ide"})
    out = dutlab_run.run(job, render_device("amd64"))
    assert out.returncode == 0, out.stdout
    assert any("over the serial console" in m for m in out.messages("info"))
    assert cases(out.suite("0_serial")) == [("sent", "pass", None, None)]


def test_prompt_constant_matches_the_assets() -> None:
    assert manifest("amd64")["prompt"] == PROMPT


def test_minimal_boot_on_a_connect_command_with_user_commands(dutlab_run: DutlabRun, tmp_path: Path) -> None:
    # A "board" whose console is a command (here QEMU itself, as ser2net's telnet would be).
    assets = assets_for("amd64")
    marker = tmp_path / "relay-on"
    device = render_device("amd64")
    device["commands"] = {
        "connect": f"qemu-system-x86_64 -cpu max -nographic -m 256 -monitor none -kernel {assets}/vmlinuz "
                   f"-initrd {assets}/initramfs.cpio.gz -append console=ttyS0",
        "users": {"relay": {"do": f"touch {marker}", "undo": f"rm {marker}"}},
    }
    job = qemu_job("amd64", [inline_definition("board", ["lava-test-case console --result pass"])])
    job["actions"][1] = {"boot": {"method": "minimal", "prompts": [PROMPT], "timeout": {"seconds": 60}}}
    job["actions"].insert(0, {"command": {"name": "relay"}})
    proc, output_dir = dutlab_run.start(job, device)
    wait_for_log(output_dir, "connecting: qemu-system-x86_64")
    assert marker.exists()  # the user command ran before the boot
    out = dutlab_run.finish(proc, output_dir)
    assert out.returncode == 0, out.stdout
    assert cases(out.suite("0_board")) == [("console", "pass", None, None)]
    assert not marker.exists()  # finalize ran the undo
    assert any(m.startswith("qemu-system-x86_64 ") and "stopped" in m for m in out.messages("info"))


# Real boards: power control through the device's commands #################################

PDU = Path(__file__).with_name("pdu_qmp.py")


@pytest.fixture
def board(tmp_path: Path):
    """A QEMU "board", powered off (paused before its first instruction), its serial console on a
    telnet port as ser2net gives one, and a PDU script that switches it over QMP."""
    from labkit import free_port

    assets = assets_for("amd64")
    port, qmp, log = free_port(), tmp_path / "qmp.sock", tmp_path / "pdu.log"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-cpu", "max", "-m", "256", "-display", "none", "-S", "-monitor", "none",
         "-serial", f"telnet:127.0.0.1:{port},server=on,wait=off", "-qmp", f"unix:{qmp},server=on,wait=off",
         "-kernel", f"{assets}/vmlinuz", "-initrd", f"{assets}/initramfs.cpio.gz", "-append", "console=ttyS0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        if qmp.exists():
            break
        time.sleep(0.05)
    pdu = f"{sys.executable} {PDU} {qmp} {{}} --log {log}"
    device = render_device("amd64")
    device["commands"] = {"connect": f"telnet 127.0.0.1 {port}", "hard_reset": pdu.format("reset"),
                          "power_on": pdu.format("on"), "power_off": pdu.format("off")}
    yield device, log
    proc.kill()
    proc.wait()


def minimal_job(steps: list[str], **boot: object) -> dict:
    job = qemu_job("amd64", [inline_definition("board", steps)])
    job["actions"][1] = {"boot": {"method": "minimal", "prompts": [PROMPT], "timeout": {"seconds": 90}, **boot}}
    return job


def test_board_is_reset_after_connecting_and_switched_off_at_the_end(dutlab_run: DutlabRun, board) -> None:
    device, pdu_log = board
    out = dutlab_run.run(minimal_job(["lava-test-case console --result pass"]), device)
    assert out.returncode == 0, out.stdout
    assert cases(out.suite("0_board")) == [("console", "pass", None, None)]
    # powered off until the reset, which came after the console was connected; off at the end
    assert pdu_log.read_text().splitlines() == ["reset prelaunch", "off running"]
    infos = out.messages("info")
    connected = next(i for i, m in enumerate(infos) if m.startswith("connecting: telnet"))
    reset = next(i for i, m in enumerate(infos) if m.startswith("running on the worker: ") and " reset " in m)
    assert connected < reset
    assert any(m.startswith("Linux version") or "Linux version" in m for m in out.messages("target"))


def test_power_cycle_without_hard_reset_and_no_reset_when_asked(dutlab_run: DutlabRun, board) -> None:
    device, pdu_log = board
    del device["commands"]["hard_reset"]
    out = dutlab_run.run(minimal_job(["lava-test-case console --result pass"]), device)
    assert out.returncode == 0, out.stdout
    assert pdu_log.read_text().splitlines() == ["off prelaunch", "on prelaunch", "off running"]
    # reset: false: the board is left as it is (here: off), so the boot times out waiting for it
    pdu_log.unlink()
    job = minimal_job(["lava-test-case console --result pass"], reset=False)
    job["actions"][1]["boot"]["timeout"] = {"seconds": 8}
    out = dutlab_run.run(job, device)
    assert out.result["error_type"] == "Timeout" and "auto-login-action" in out.result["error_msg"], out.result
    assert pdu_log.read_text().splitlines() == ["off prelaunch"]  # only finalize's power-off


def test_a_failing_pdu_command_is_an_infrastructure_error_naming_it(dutlab_run: DutlabRun, tmp_path: Path) -> None:
    device = render_device("amd64")
    device["commands"] = {"connect": "sleep 600", "hard_reset": "echo relay 4 does not answer >&2; exit 3",
                          "power_off": "true"}
    out = dutlab_run.run(minimal_job(["true"]), device)
    assert out.returncode == 1
    assert out.result == {"result": "fail", "error_type": "Infrastructure", "error_msg":
                          "hard_reset: 'echo relay 4 does not answer >&2; exit 3' failed with exit code 3: "
                          "relay 4 does not answer"}
    # a board that cannot be switched off fails the job even when its tests passed
    device["commands"] = {"connect": "sleep 600", "hard_reset": "true", "power_off": "exit 5"}
    device["commands"]["connect"] = f"qemu-system-x86_64 -cpu max -nographic -m 256 -monitor none " \
        f"-kernel {assets_for('amd64')}/vmlinuz -initrd {assets_for('amd64')}/initramfs.cpio.gz -append console=ttyS0"
    out = dutlab_run.run(minimal_job(["lava-test-case ok --result pass"]), device)
    assert cases(out.suite("0_board")) == [("ok", "pass", None, None)]
    assert out.result == {"result": "fail", "error_type": "Infrastructure",
                          "error_msg": "power_off: 'exit 5' failed with exit code 5 and printed nothing"}
