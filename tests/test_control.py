"""The control socket with a real trainer, real Unix sockets and a real second uid."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from podium.engine.checkpoints import CheckpointConfig, Checkpointer
from podium.engine.control import (
    MAX_CONNECTIONS,
    MAX_MESSAGE,
    ControlClient,
    ControlServer,
    trainer_handlers,
)
from podium.engine.errors import RunError
from podium.engine.events import EventBus
from podium.engine.train_config import TrainConfig
from podium.engine.trainer import Trainer, seed_everything
from tests.toy import ToyData, ToyModel


@pytest.fixture
def live(tmp_path):
    """A toy trainer training in a thread behind a control socket; stopped at teardown."""
    seed_everything(0)
    bus = EventBus()
    cfg = TrainConfig(
        epochs=100_000, batch_size=8, lr=1e-2, warmup_steps=0, schedule="constant", device="cpu"
    )
    trainer = Trainer(
        model=ToyModel(),
        train_set=ToyData(64),
        val_set=None,
        cfg=cfg,
        loss_weights={"cls": 1.0, "reg": 1.0},
        checkpointer=Checkpointer(tmp_path / "ck", CheckpointConfig(), "h"),
        bus=bus,
        device=torch.device("cpu"),
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    status = lambda: {"step": trainer.state.step, "state": trainer.run_state}  # noqa: E731
    server = ControlServer(run_dir, handlers=trainer_handlers(trainer, status), bus=bus).start()
    thread = threading.Thread(target=trainer.train, daemon=True)
    thread.start()
    yield trainer, server, run_dir
    trainer.stop("test teardown")
    thread.join(20)
    server.close()


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_socket_is_private_and_recorded_in_the_run(live):
    _, server, run_dir = live
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700
    assert len(str(server.path)) < 100
    recorded = json.loads((run_dir / "control.json").read_text())
    assert recorded["socket"] == str(server.path) and recorded["pid"] == os.getpid()


def test_commands_drive_the_run(live):
    trainer, _, run_dir = live
    with ControlClient.for_run(run_dir) as client:
        wait_for(lambda: client.request("status")["step"] >= 2)
        paused_at = client.request("pause")
        time.sleep(0.3)
        assert client.request("status") == {"step": paused_at, "state": "paused"}
        saved = client.request("save")
        assert saved == [
            {"name": f"step-{paused_at:08d}", "step": paused_at, "kind": "manual"},
            {"name": "latest", "step": paused_at, "kind": "latest"},
        ]
        assert client.request("set_lr", lr=1e-4) == 1e-4
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
        client.request("resume")
        wait_for(lambda: trainer.state.step > paused_at + 2)
        client.request("stop", reason="enough")
        wait_for(lambda: trainer.run_state == "stopped")


def test_bad_messages_get_errors_and_never_stall_the_run(live):
    _, _, run_dir = live
    with ControlClient.for_run(run_dir) as client:
        for raw, fragment in [
            (b"{not json\n", "malformed JSON"),
            (b"[1, 2]\n", "must be a JSON object"),
            (b'{"cmd": "format_disk"}\n', "unknown command 'format_disk'"),
            (b'{"v": 99, "cmd": "status"}\n', "unsupported protocol version"),
            (b'{"cmd": "status", "args": 5}\n', "args must be a JSON object"),
            (b'{"cmd": "set_lr", "args": {"lr": "fast"}}\n', "args.lr must be a number"),
            (b'{"cmd": "set_lr", "args": {"lr": -1}}\n', "positive"),
            (b'{"cmd": "generate"}\n', "not available"),
            (b"\xff\xfe\n", "malformed JSON"),
        ]:
            client.send_raw(raw)
            reply = client.read_message()
            assert reply["ok"] is False and fragment in reply["error"], (raw, reply)
        before = client.request("status")["step"]
        wait_for(lambda: client.request("status")["step"] > before)  # still training
    with ControlClient.for_run(run_dir) as client:
        client.send_raw(b"x" * (MAX_MESSAGE + 10))
        reply = client.read_message()
        assert reply["ok"] is False and "longer than" in reply["error"]
        with pytest.raises(RunError, match="closed the connection"):
            client.read_message()
    with ControlClient.for_run(run_dir) as client:  # a new viewer is still served
        assert client.request("status")["state"] == "running"


def test_several_viewers_stream_events_at_once(live):
    _, _, run_dir = live
    streams = [ControlClient.for_run(run_dir) for _ in range(3)]
    try:
        iterators = [c.subscribe() for c in streams]
        for it in iterators:
            seen = []
            for event in it:
                if event["type"] == "StepMetrics":
                    seen.append(event["step"])
                if len(seen) >= 3:
                    break
            assert all(b > a for a, b in itertools.pairwise(seen)), seen
        with ControlClient.for_run(run_dir) as cmd:
            cmd.request("pause")
        kinds = []
        for event in iterators[0]:
            kinds.append(event["type"])
            if event["type"] == "StateChanged":
                assert event["state"] == "paused"
                break
    finally:
        for c in streams:
            c.close()
    # Viewers that went away were dropped without disturbing the run.
    with ControlClient.for_run(run_dir) as cmd:
        cmd.request("resume")
        step = cmd.request("status")["step"]
        wait_for(lambda: cmd.request("status")["step"] > step)


def test_a_peer_that_is_not_allowed_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    strict = ControlServer(
        tmp_path / "run",
        handlers={"status": lambda a: {}},
        bus=EventBus(),
        allowed_uids=(12345,),
        path=tmp_path / "s.sock",
    ).start()
    try:
        with ControlClient(strict.path) as client:
            reply = client.read_message()
        assert reply == {"v": 1, "ok": False, "error": "permission denied: not the run's owner"}
        assert strict.refused == 1
    finally:
        strict.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as a second user")
def test_another_real_user_is_refused_by_the_directory_and_by_peer_credentials(tmp_path):
    nobody = 65534
    code = (
        "import os, socket, sys\n"
        f"os.setgid({nobody}); os.setuid({nobody})\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "    print(s.makefile().readline().strip())\n"
        "except OSError as e:\n"
        "    print('ERR', e.errno)\n"
    )
    base = Path(
        tempfile.mkdtemp(prefix="podium-uid-test-", dir="/tmp")
    )  # outside pytest's 0700 dirs
    private = base / "private"
    private.mkdir(mode=0o700)
    server = ControlServer(tmp_path, handlers={}, bus=EventBus(), path=private / "s.sock").start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(server.path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "ERR 13"  # EACCES: cannot even reach the socket
        # Open every door: the uid check alone still refuses the stranger.
        os.chmod(base, 0o755)
        os.chmod(private, 0o755)
        os.chmod(server.path, 0o666)
        out = subprocess.run(
            [sys.executable, "-c", code, str(server.path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert json.loads(out.stdout)["error"] == "permission denied: not the run's owner", out
        assert server.refused == 1
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)


def test_client_without_a_live_run_says_so(tmp_path):
    with pytest.raises(RunError, match="has no control socket"):
        ControlClient.for_run(tmp_path)
    with pytest.raises(RunError, match="cannot connect"):
        ControlClient(tmp_path / "gone.sock")


def test_deeply_nested_json_gets_an_error_and_the_connection_lives_on(live):
    _, _, run_dir = live
    with ControlClient.for_run(run_dir) as client:
        for raw in (b"[" * 30_000 + b"\n", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"\n"):
            client.send_raw(raw)
            reply = client.read_message()
            assert reply["ok"] is False and "nested deeper than" in reply["error"], reply
        # Brackets inside strings are text, not nesting.
        assert client.request("status", note="[" * 100)["state"]
        assert client.request("status")["state"] == "running"  # the same connection answers


FLOOD = """
import collections, socket, sys, time
path, count, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held = collections.deque()
print("flooding", flush=True)
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
        held.append(s)
    except OSError:
        s.close()
    if len(held) > 1000:
        held.popleft().close()
time.sleep(hold)
"""


def test_the_owner_still_gets_through_a_connect_flood(tmp_path):
    """A burst of silent connections (a script gone wrong, stuck viewers) cannot lock the owner
    out: the backlog is deep, a client retries a momentarily full one, silent connections beyond
    the limit are turned away without a thread, and a command takes a silent one's place."""
    (tmp_path / "run").mkdir()
    server = ControlServer(
        tmp_path / "run", handlers={"status": lambda a: {"state": "running"}}, bus=EventBus()
    ).start()
    floods = [
        subprocess.Popen(
            [sys.executable, "-c", FLOOD, str(server.path), "2000", "30"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for flood in floods:
            assert flood.stdout.readline().strip() == "flooding"
        failures = []
        for _ in range(10):
            try:
                with ControlClient.for_run(tmp_path / "run", timeout=10) as client:
                    assert client.request("status")["state"] == "running"
            except RunError as exc:
                failures.append(str(exc))
            time.sleep(0.02)
        assert all(flood.poll() is None for flood in floods)  # the flood was still holding
        assert not failures, failures
        assert len(server._clients) <= 64  # the silent ones beyond the limit were turned away
    finally:
        for flood in floods:
            flood.kill()
            flood.wait(10)
        server.close()


def test_event_streams_leave_a_slot_for_commands(tmp_path):
    (tmp_path / "run").mkdir()
    server = ControlServer(
        tmp_path / "run", handlers={"status": lambda a: {"state": "running"}}, bus=EventBus()
    ).start()
    streams = []
    try:
        for _ in range(MAX_CONNECTIONS - 1):
            client = ControlClient(server.path, timeout=10)
            streams.append(client)
            client.request("subscribe")
        with ControlClient(server.path, timeout=10) as extra:
            with pytest.raises(RunError, match="too many event streams"):
                extra.request("subscribe")
            assert extra.request("status")["state"] == "running"  # the kept slot serves commands
    finally:
        for client in streams:
            client.close()
        server.close()
