"""A Chaos Mesh 0.9 client built at test time from tests/data/injure-0.9.proto alone, in a
private descriptor pool (so it shares nothing with the server's generated code)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import grpc
import grpc_tools
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

PROTO = Path(__file__).parent / "data" / "injure-0.9.proto"


def _messages() -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "set.pb")
        wk = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{wk}", "--include_imports",
                          f"--descriptor_set_out={out}", PROTO.name])
        assert rc == 0, "protoc failed on the 0.9 proto"
        fds = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(n))  # noqa: E731
    return {"Request": get("injure.Request"), "Response": get("injure.Response"),
            "InjectedResponse": get("injure.InjectedResponse"), "Empty": get("google.protobuf.Empty")}


class Injure09:
    def __init__(self, addr: str) -> None:
        self.m = _messages()
        self.channel = grpc.insecure_channel(addr)
        E, Req = self.m["Empty"], self.m["Request"]
        shapes = {
            "Methods": (E, self.m["Response"]), "RecoverAll": (E, E), "RecoverMethod": (Req, E),
            "SetFault": (Req, E), "SetFaultAll": (Req, E), "Injected": (E, self.m["InjectedResponse"]),
        }
        for name, (req, resp) in shapes.items():
            setattr(self, name, self.channel.unary_unary(
                f"/injure.Injure/{name}", request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString))

    def request(self, **kw):
        return self.m["Request"](**kw)

    def empty(self):
        return self.m["Empty"]()

    def close(self) -> None:
        self.channel.close()
