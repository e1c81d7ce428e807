"""A small adbd for the tests: the adb wire protocol over TCP, so the real `adb` client and server
talk to it as to a phone reached with `adb connect`.

It speaks CNXN/AUTH/OPEN/OKAY/WRTE/CLSE with one WRTE in flight per stream (no delayed acks),
the shell v2 service (stdin/stdout/stderr/exit packets), and the sync service (STAT, SEND, RECV,
QUIT) for push and pull. Files live on this host, under the temp directory the test gives as
the phone's home; shell commands run with a local `sh -c` there, its bin/ first on PATH (where a
test puts stand-ins for phone commands such as getprop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path

CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = (int.from_bytes(c, "little") for c in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))
VERSION, MAXDATA = 0x01000001, 256 * 1024  # this version needs no payload checksums
HEADER = struct.Struct("<6I")
STDIN, STDOUT, STDERR, EXIT, CLOSE_STDIN = 0, 1, 2, 3, 4


class Stream:
    """One opened service; sends wait for the host's OKAY of the previous WRTE."""

    def __init__(self, conn: "Connection", local: int, remote: int):
        self.conn, self.local, self.remote = conn, local, remote
        self.acked = threading.Event()
        self.acked.set()
        self.closed = False
        self.inbox = bytearray()
        self.more = threading.Condition()

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), MAXDATA):
            self.acked.wait()
            if self.closed:
                return
            self.acked.clear()
            self.conn.write(WRTE, self.local, self.remote, data[i:i + MAXDATA])

    def received(self, data: bytes) -> None:
        with self.more:
            self.inbox += data
            self.more.notify_all()
        self.conn.write(OKAY, self.local, self.remote)

    def read(self, n: int) -> bytes | None:
        with self.more:
            while len(self.inbox) < n and not self.closed:
                self.more.wait()
            if len(self.inbox) < n:
                return None
            out = bytes(self.inbox[:n])
            del self.inbox[:n]
            return out

    def close(self, tell: bool = True) -> None:
        if not self.closed and tell:
            self.conn.write(CLSE, self.local, self.remote)
        self.closed = True
        self.acked.set()
        with self.more:
            self.more.notify_all()


class Connection:
    def __init__(self, sock: socket.socket, home: Path, authorized: bool):
        self.sock, self.home, self.authorized = sock, home, authorized
        self.lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1

    def write(self, cmd: int, a0: int, a1: int, data: bytes = b"") -> None:
        with self.lock:
            self.sock.sendall(HEADER.pack(cmd, a0, a1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF) + data)

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve(self) -> None:
        try:
            while True:
                cmd, a0, a1, length, _, _ = HEADER.unpack(self._recv(HEADER.size))
                data = self._recv(length) if length else b""
                self.handle(cmd, a0, a1, data)
        except (EOFError, OSError):
            pass
        finally:
            for s in list(self.streams.values()):
                s.close(tell=False)
            self.sock.close()

    def handle(self, cmd: int, a0: int, a1: int, data: bytes) -> None:
        if cmd in (CNXN, AUTH):
            if self.authorized:
                self.write(CNXN, VERSION, MAXDATA, b"device::ro.product.name=nasctl_test;ro.product.model=adbd_stand_in;"
                                                  b"ro.product.device=nasctl_test;features=shell_v2,cmd")
            else:  # a phone that never accepted this host's key: the client shows "unauthorized"
                self.write(AUTH, 1, 0, os.urandom(20))
        elif cmd == OPEN:
            local, self.next_id = self.next_id, self.next_id + 1
            stream = self.streams[local] = Stream(self, local, a0)
            service = data.rstrip(b"\0").decode()
            self.write(OKAY, local, a0)
            target = self.shell if service.startswith("shell") else self.sync if service == "sync:" else None
            if target is None:
                stream.close()
            else:
                threading.Thread(target=target, args=(stream, service), daemon=True).start()
        elif cmd == OKAY and a1 in self.streams:
            self.streams[a1].acked.set()
        elif cmd == WRTE and a1 in self.streams:
            self.streams[a1].received(data)
        elif cmd == CLSE and a1 in self.streams:
            self.streams.pop(a1).close(tell=False)

    # -- services ---------------------------------------------------------------------------
    def shell(self, s: Stream, service: str) -> None:
        """shell,v2[,options]:COMMAND -> sh -c COMMAND, its streams framed as shell v2 packets."""
        command = service.split(":", 1)[1]
        proc = subprocess.Popen(["sh", "-c", command], cwd=self.home, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                env={**os.environ, "HOME": str(self.home), "PATH": f"{self.home / 'bin'}:{os.environ['PATH']}"})

        def pump(pipe, ident):
            for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
                if s.closed:  # as adbd, which closes its ends: the command's next write fails (SIGPIPE)
                    break
                s.send(bytes([ident]) + struct.pack("<I", len(chunk)) + chunk)
            pipe.close()

        pumps = [threading.Thread(target=pump, args=(p, i), daemon=True) for p, i in ((proc.stdout, STDOUT), (proc.stderr, STDERR))]
        for t in pumps:
            t.start()

        def feed():
            while (head := s.read(5)) is not None:
                ident, n = head[0], struct.unpack("<I", head[1:])[0]
                body = s.read(n) if n else b""
                try:
                    if ident == STDIN and body:
                        proc.stdin.write(body)
                        proc.stdin.flush()
                    elif ident == CLOSE_STDIN:
                        proc.stdin.close()
                except (BrokenPipeError, ValueError):
                    pass
            if proc.poll() is None:  # the host closed the stream: as adbd ("protocol FD died"), SIGHUP
                proc.send_signal(signal.SIGHUP)  # (sh -c execs a lone command: this reaches it)
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # and its input closed, should it ignore SIGHUP

        threading.Thread(target=feed, daemon=True).start()
        code = proc.wait()
        for t in pumps:
            t.join()
        s.send(bytes([EXIT]) + struct.pack("<I", 1) + bytes([code & 0xFF]))
        s.close()

    def sync(self, s: Stream, _service: str) -> None:
        """STAT / SEND / RECV / QUIT, each request an id and a length, as `adb push/pull` send them."""
        while (head := s.read(8)) is not None:
            ident, n = head[:4], struct.unpack("<I", head[4:])[0]
            if ident == b"QUIT":
                break
            arg = s.read(n).decode()
            if ident == b"STAT":
                try:
                    st = os.stat(arg)
                    s.send(b"STAT" + struct.pack("<III", st.st_mode, st.st_size, int(st.st_mtime)))
                except OSError:
                    s.send(b"STAT" + struct.pack("<III", 0, 0, 0))
            elif ident == b"SEND":
                path, _, mode = arg.rpartition(",")
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as f:
                    while (h := s.read(8)) is not None:
                        k, m = h[:4], struct.unpack("<I", h[4:])[0]
                        if k == b"DONE" or (data := s.read(m)) is None:  # done, or the client went away
                            break
                        f.write(data)
                os.chmod(path, int(mode) & 0o777)
                s.send(b"OKAY" + struct.pack("<I", 0))
            elif ident == b"RECV":
                try:
                    with open(arg, "rb") as f:
                        for chunk in iter(lambda: f.read(64 * 1024), b""):
                            s.send(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                    s.send(b"DONE" + struct.pack("<I", 0))
                except OSError as e:
                    msg = e.strerror.encode()
                    s.send(b"FAIL" + struct.pack("<I", len(msg)) + msg)
            else:
                msg = f"unsupported sync request {ident!r}".encode()
                s.send(b"FAIL" + struct.pack("<I", len(msg)) + msg)
        s.close()


class Adbd:
    """Listens on 127.0.0.1:<port>; `adb connect 127.0.0.1:<port>` makes it a device."""

    def __init__(self, home: Path, authorized: bool = True):
        self.home, self.authorized = home, authorized
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.serial = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=Connection(sock, self.home, self.authorized).serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()
