"""The per-run control socket: commands in, live events out.

Every live run serves a Unix domain socket so that a dashboard in another terminal (``podium
attach``), a script, or ``podium control`` can drive it. Only the run's owner (and root) may
connect, enforced twice: the socket lives in a directory only its owner can enter (0700, socket
0600), and the server checks each peer's uid with ``SO_PEERCRED``.

Socket paths are limited to ~108 bytes, so the socket lives in a short runtime directory
(``$XDG_RUNTIME_DIR/podium`` or ``/tmp/podium-<uid>``), named by a hash of the run directory, and
the run directory records where it is in ``control.json``.

Protocol: newline-delimited JSON, one object per line, versioned by ``"v": 1``::

    -> {"v": 1, "id": 7, "cmd": "set_lr", "args": {"lr": 0.0001}}
    <- {"v": 1, "id": 7, "ok": true, "result": 0.0001}
    -> {"v": 1, "id": 8, "cmd": "subscribe"}
    <- {"v": 1, "id": 8, "ok": true, "result": {"subscribed": true}}
    <- {"v": 1, "event": {"type": "StepMetrics", "step": 12, ...}}

Malformed, oversized, too deeply nested or unknown messages get an error reply; they never crash
or stall the run. A flood of connections cannot lock the owner out either: the listen backlog is
deep, at most ``MAX_CONNECTIONS`` are served at once, a full house drops its oldest connection that
has said nothing yet, and event streams may take all but one slot, so a command always has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Literal

from podium.engine.checkpoints import write_json_atomic
from podium.engine.errors import RunError
from podium.engine.events import Event, EventBus, QueuedSubscriber, event_to_dict

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 * 1024
"""Bytes in one request line; longer lines are refused and the connection closed."""
MAX_DEPTH = 32
"""Nesting of arrays and objects in one request; deeper is refused before parsing (the JSON
parser recurses, and 30,000 ``[`` exhaust the stack of the thread serving the connection)."""
COMMAND_TIMEOUT = 60.0
BACKLOG = 1024
"""Connections the kernel queues before ``accept``; beyond it a connect fails with EAGAIN."""
MAX_CONNECTIONS = 64
"""Connections served at once (each holds a thread); event streams get at most one less."""
SILENT_TIMEOUT = 10.0
"""Seconds a new connection may take to send its first request before it is closed."""
CONNECT_RETRY = 10.0
"""Seconds a client retries a connect that a momentarily full backlog refuses (EAGAIN)."""
COMMANDS = ("status", "pause", "resume", "stop", "save", "set_lr", "generate", "subscribe")


def runtime_dir() -> Path:
    """A short directory only this user can enter, for sockets."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        Path(xdg) / "podium" if xdg and Path(xdg).is_dir() else Path(f"/tmp/podium-{os.getuid()}")
    )
    try:
        base.mkdir(mode=0o700, parents=False, exist_ok=True)
    except FileNotFoundError:
        base = Path(f"/tmp/podium-{os.getuid()}")
        base.mkdir(mode=0o700, exist_ok=True)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RunError(f"{base}: not a directory owned by you; remove it or set XDG_RUNTIME_DIR")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(base, 0o700)
    return base


def socket_path_for(run_path: Path) -> Path:
    digest = hashlib.sha1(str(run_path.resolve()).encode()).hexdigest()[:16]
    return runtime_dir() / f"{digest}.sock"


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[{]|[\]}]")


def nesting_depth(line: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings not counted).

    Malformed text gives some number; the parser then refuses it on its own."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub(b'""', line)):
        if m.group() in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _encode(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, default=_json_default, allow_nan=False) + "\n").encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return repr(obj)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: send them as null (a lost point, never a broken stream)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class ControlServer:
    """Serves one live run's socket. ``handlers`` map command names to callables of ``args``."""

    def __init__(
        self,
        run_path: Path,
        *,
        handlers: Mapping[str, Callable[[dict[str, Any]], Any]],
        bus: EventBus,
        allowed_uids: tuple[int, ...] | None = None,
        path: Path | None = None,
    ) -> None:
        self.run_path = run_path
        self.path = path or socket_path_for(run_path)
        self.handlers = dict(handlers)
        self.bus = bus
        self.allowed_uids = allowed_uids if allowed_uids is not None else (os.getuid(), 0)
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._silent: dict[socket.socket, float] = {}
        """Connections that have sent no request yet, with when they were accepted."""
        self._streams = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.refused = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ControlServer:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a dead process (the run lock proved it dead)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(BACKLOG)
        self._sock = sock
        write_json_atomic(
            self.run_path / "control.json",
            {"socket": str(self.path), "pid": os.getpid(), "host": socket.gethostname()},
        )
        self._spawn(self._accept_loop, "control-accept")
        return self

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.run_path / "control.json").unlink()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- connections ------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                uid = peer_uid(conn)
            except OSError:
                uid = -1
            if uid not in self.allowed_uids:
                self.refused += 1
                with contextlib.suppress(OSError):
                    conn.sendall(
                        _encode(
                            {
                                "v": PROTOCOL_VERSION,
                                "ok": False,
                                "error": "permission denied: not the run's owner",
                            }
                        )
                    )
                conn.close()
                continue
            verdict = self._admit(conn)
            if verdict != "serve":
                if verdict == "busy":
                    busy = self._error(None, f"busy: {MAX_CONNECTIONS} connections are open")
                    with contextlib.suppress(OSError):
                        conn.sendall(_encode({**busy, "busy": True}))
                conn.close()  # a silent one is closed without a word: one call, and next
                continue
            conn.settimeout(SILENT_TIMEOUT)
            self._spawn(self._serve, "control-client", conn)

    def _admit(self, conn: socket.socket) -> Literal["serve", "drop", "busy"]:
        """Whether to serve ``conn``. At the limit, a connection that comes with its request (a
        client sends it as soon as it connects) takes the place of the oldest one that is still
        silent (no bytes sent, not even unread ones); a silent newcomer is turned away at once,
        without a thread, so a flood of them drains fast. When every connection has spoken,
        nobody new is admitted (a client retries)."""
        with self._lock:
            if len(self._clients) >= MAX_CONNECTIONS:
                if not _has_pending(conn):
                    return "drop"
                victim = next((c for c in self._silent if not _has_pending(c)), None)
                if victim is None:
                    return "busy"
                del self._silent[victim]
                self._clients.discard(victim)
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)  # its thread's read returns: it cleans up
            self._clients.add(conn)
            self._silent[conn] = time.monotonic()
            return "serve"

    def _serve(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()
        unsubscribe: Callable[[], None] | None = None
        queued: QueuedSubscriber | None = None

        def send(obj: Mapping[str, Any]) -> None:
            data = _encode(_finite(obj))
            with send_lock:
                conn.sendall(data)

        try:
            with conn.makefile("rb") as reader:
                while not self._closed.is_set():
                    line = reader.readline(MAX_MESSAGE + 1)
                    if not line:
                        return
                    if len(line) > MAX_MESSAGE and not line.endswith(b"\n"):
                        send(self._error(None, f"message longer than {MAX_MESSAGE} bytes; closing"))
                        return
                    with self._lock:
                        if self._silent.pop(conn, None) is not None:
                            conn.settimeout(None)  # it spoke: an idle command client may stay
                    reply, subscribe = self._handle_line(line)
                    if subscribe and queued is None:
                        with self._lock:
                            full = self._streams >= MAX_CONNECTIONS - 1
                            self._streams += 0 if full else 1
                        if full:
                            send(self._error(reply["id"], "too many event streams are open"))
                            continue

                        def forward(event: Event) -> None:
                            send({"v": PROTOCOL_VERSION, "event": event_to_dict(event)})

                        queued = QueuedSubscriber(forward, maxlen=5000, name="control-subscriber")
                        unsubscribe = self.bus.subscribe(queued)
                    send(reply)
        except (OSError, ValueError):
            return  # the viewer went away; the run does not care
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if queued is not None:
                queued.close(timeout=1.0)
            with self._lock:
                self._clients.discard(conn)
                self._silent.pop(conn, None)
                if queued is not None:
                    self._streams -= 1
            with contextlib.suppress(OSError):
                conn.close()

    def _error(self, request_id: Any, message: str) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": message}

    def _handle_line(self, line: bytes) -> tuple[dict[str, Any], bool]:
        """Reply to one request line; the bool says whether to start streaming events."""
        if nesting_depth(line) > MAX_DEPTH:
            return self._error(None, f"malformed JSON: nested deeper than {MAX_DEPTH}"), False
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return self._error(None, f"malformed JSON: {exc}"), False
        if not isinstance(request, dict):
            return self._error(None, "a request must be a JSON object"), False
        request_id = request.get("id")
        if request.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            return self._error(
                request_id,
                f"unsupported protocol version {request.get('v')!r} (this run speaks {PROTOCOL_VERSION})",
            ), False
        cmd = request.get("cmd")
        args = request.get("args", {})
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            return self._error(
                request_id, f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})"
            ), False
        if not isinstance(args, dict):
            return self._error(request_id, "args must be a JSON object"), False
        if cmd == "subscribe":
            return {
                "v": PROTOCOL_VERSION,
                "id": request_id,
                "ok": True,
                "result": {"subscribed": True},
            }, True
        handler = self.handlers.get(cmd)
        if handler is None:
            return self._error(request_id, f"{cmd} is not available for this run"), False
        try:
            result = handler(args)
            if isinstance(result, Future):
                result = result.result(timeout=COMMAND_TIMEOUT)
        except FutureTimeout:
            return self._error(
                request_id, f"{cmd}: no answer from the run within {COMMAND_TIMEOUT:.0f} s"
            ), False
        except Exception as exc:
            return self._error(request_id, f"{cmd}: {exc}"), False
        return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}, False


def _has_pending(conn: socket.socket) -> bool:
    """Whether ``conn`` has bytes waiting (a request the serving thread has not read yet), or
    its peer has gone (its thread is about to clean up). A poll, not a ``recv``: a socket with a
    timeout would wait that long for the answer, even with ``MSG_DONTWAIT``."""
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    return bool(poller.poll(0))


def trainer_handlers(
    trainer: Any, status: Callable[[], dict[str, Any]]
) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """The socket's commands for a live trainer."""

    def set_lr(args: dict[str, Any]) -> Any:
        lr = args.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise ValueError(f"args.lr must be a number (got {lr!r})")
        return trainer.set_lr(float(lr))

    def save(args: dict[str, Any]) -> Any:
        fut = trainer.save_now()
        infos = fut.result(timeout=COMMAND_TIMEOUT)
        return [{"name": i.name, "step": i.step, "kind": i.kind} for i in infos]

    return {
        "status": lambda args: status(),
        "pause": lambda args: trainer.pause(),
        "resume": lambda args: trainer.resume(),
        "stop": lambda args: trainer.stop(
            str(args.get("reason") or "stopped over the control socket")
        ),
        "save": save,
        "set_lr": set_lr,
    }


class ControlClient:
    """Talks to a run's socket. Raises RunError with a one-line reason when it cannot."""

    def __init__(self, path: Path, *, timeout: float = COMMAND_TIMEOUT + 5) -> None:
        self.path = path
        self._timeout = timeout
        self._deadline = time.monotonic() + CONNECT_RETRY
        self._sock, self._reader = self._connect()
        self._next_id = 0

    def _connect(self) -> tuple[socket.socket, Any]:
        """A connected socket; a full backlog (EAGAIN) is retried until ``CONNECT_RETRY``."""
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(str(self.path))
                return sock, sock.makefile("rb")
            except BlockingIOError:  # the backlog is full for a moment: the run drains it
                sock.close()
                if time.monotonic() < self._deadline:
                    time.sleep(0.02)
                    continue
                exc: OSError = BlockingIOError("the run's connection queue stays full")
            except OSError as error:
                sock.close()
                exc = error
            raise RunError(
                f"{self.path}: cannot connect to the run's control socket ({exc.strerror or exc})"
            ) from None

    @classmethod
    def for_run(cls, run_path: Path, **kw: Any) -> ControlClient:
        try:
            info = json.loads((run_path / "control.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise RunError(f"run {run_path.name} has no control socket (is it live?)") from None
        return cls(Path(info["socket"]), **kw)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
            self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read_message(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise RunError(f"{self.path}: the run closed the connection")
        return json.loads(line)

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one command and return its result; raises RunError with the run's message.

        A run too busy to take this connection (a flood of silent ones) is asked the first
        request again on a fresh connection until ``CONNECT_RETRY`` has passed since the first
        connect."""
        self._next_id += 1
        request_id = self._next_id
        data = _encode({"v": PROTOCOL_VERSION, "id": request_id, "cmd": cmd, "args": args})
        self.send_raw(data)
        while True:
            try:
                msg = self.read_message()
            except RunError:
                # Closed before any answer: a full house drops a newcomer that had not yet sent
                # its request (this client, preempted between connect and send). Ask again.
                if request_id != 1 or time.monotonic() >= self._deadline:
                    raise
                msg = {"busy": True}
            if "event" in msg:
                continue  # a subscribed stream interleaves events with replies
            if msg.get("id") not in (request_id, None):
                continue
            if msg.get("busy") and request_id == 1 and time.monotonic() < self._deadline:
                self.close()
                time.sleep(0.05)
                self._sock, self._reader = self._connect()
                self.send_raw(data)
                continue
            if not msg.get("ok"):
                raise RunError(str(msg.get("error", "the run refused the command")))
            return msg.get("result")

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self) -> None:
        """Close from another thread: a reader blocked in ``events()`` returns at once."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self.close()

    def subscribe(self) -> Iterator[dict[str, Any]]:
        """Yield events (as dicts with a ``type``) until the run ends or the connection drops."""
        self.request("subscribe")
        return self.events()

    def events(self) -> Iterator[dict[str, Any]]:
        """The event stream of a subscribed connection (replies to other requests are skipped)."""
        while True:
            try:
                msg = self.read_message()
            except (RunError, OSError, ValueError):
                return
            if "event" in msg:
                yield msg["event"]
