"""A local port that reaches one pod's port through the API server, as `kubectl
port-forward` does: for callers of `chaosfs-ctl -n/-l --port-forward` outside the pod network
(a laptop with a kubeconfig). gRPC dials 127.0.0.1:<local port>; each connection it opens
becomes one port-forward stream (the API server's pods/portforward subresource, a
websocket) to the sidecar's port, pumped both ways by two threads until either side closes.

Needs `pods/portforward` (create) in RBAC, like kubectl port-forward.
"""
from __future__ import annotations

import socket
import threading
from typing import Any

CHUNK = 64 << 10


def _pump(src: Any, dst: Any) -> None:
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


class PortForward:
    """127.0.0.1:<port> -> pod namespace/name:<remote> through the API server."""

    def __init__(self, api: Any, namespace: str, name: str, remote: int) -> None:
        self.api, self.namespace, self.name, self.remote = api, namespace, name, remote
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self._open: list[Any] = []
        self.error = ""  # why the last stream could not be opened
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True,
                         name=f"port-forward {namespace}/{name}:{remote}").start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        from kubernetes.stream import portforward
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                pf = portforward(self.api.connect_get_namespaced_pod_portforward, self.name,
                                 self.namespace, ports=str(self.remote))
                remote = pf.socket(self.remote)
                remote.setblocking(True)
            except Exception as exc:  # noqa: BLE001 - refused (RBAC, no such pod): gRPC sees a reset
                # an ApiException of the websocket handshake says why in its reason
                why = getattr(exc, "reason", None) or str(exc).strip() or type(exc).__name__
                self.error = str(why).splitlines()[0]
                conn.close()
                continue
            with self._lock:
                self._open += [conn, pf]
            threading.Thread(target=_pump, args=(conn, remote), daemon=True).start()
            threading.Thread(target=_pump, args=(remote, conn), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for x in self._open:
                try:
                    x.close()
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self._open.clear()
