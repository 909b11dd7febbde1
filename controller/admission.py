"""The IoChaos validating admission decision: an AdmissionReview request in, a response out.

The rules are :func:`controller.spec.parse_spec`'s, the same the controller applies before it
injects and ``chaosfs-controller check`` applies offline, so an experiment the API server
admits is one the controller accepts, and the refusal names the field in the same words as
the status an invalid object would get. HTTP, TLS and metrics are the injector's
(``injector/webhook.py`` serves this at ``/validate-iochaos``); nothing here does I/O.

What is refused: CREATE, and UPDATE that changes ``spec``, of an IoChaos whose spec
parse_spec refuses, with ``allowed: false`` and ``status`` ``{code: 400, reason: BadRequest,
message: "<field>: <why>"}``. Not 422/Invalid: the API server passes a webhook's code,
reason and message on but drops its ``details``, and ``kubectl`` prints an Invalid error
without details as a bare "The request is invalid" (seen on the e2e node); with BadRequest
it prints "Error from server (BadRequest): admission webhook ... denied the request:
<field>: <why>". What is let through:
DELETE and CONNECT; UPDATEs that leave ``spec`` as it was (finalizers, annotations, kopf's
bookkeeping: an object stored before the webhook existed must still be paused, recovered and
finalized by the controller, whatever its spec); objects being deleted; anything that is not
an IoChaos (a mis-scoped configuration must not block other kinds). Unknown method names are
admitted with the warnings parse_spec gives, which ``kubectl`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.spec import GROUP, KIND, PLURAL, SpecError, parse_spec

INVALID_CODE = 400  # with reason BadRequest: kubectl shows the message (see above)


@dataclass
class Verdict:
    """What to answer, and a label for logs and metrics."""

    allowed: bool
    result: str             # allowed | denied | skipped
    message: str = ""
    code: int = 0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def response(self, uid: str) -> dict:
        out: dict[str, Any] = {"uid": uid, "allowed": self.allowed}
        if not self.allowed:
            out["status"] = {"status": "Failure", "code": self.code, "reason": self.reason,
                             "message": self.message}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _is_iochaos(request: dict) -> bool:
    kind = request.get("kind") or {}
    resource = request.get("resource") or {}
    if not isinstance(kind, dict) or not isinstance(resource, dict):
        return False
    return (kind.get("group"), kind.get("kind")) == (GROUP, KIND) or \
        (resource.get("group"), resource.get("resource")) == (GROUP, PLURAL)


def decide(request: dict) -> Verdict:
    """The verdict for one AdmissionReview ``request`` (already known to carry a uid)."""
    if not _is_iochaos(request) or request.get("subResource"):
        return Verdict(True, "skipped", "not an IoChaos (or a subresource)")
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE"):
        return Verdict(True, "skipped", f"operation {operation}")
    obj = request.get("object")
    if not isinstance(obj, dict):
        return Verdict(False, "denied", "request.object: not an IoChaos object", 400,
                       "BadRequest")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if meta.get("deletionTimestamp"):
        return Verdict(True, "skipped", "being deleted")
    old = request.get("oldObject")
    if operation == "UPDATE" and isinstance(old, dict) and old.get("spec") == obj.get("spec"):
        return Verdict(True, "skipped", "spec unchanged")
    try:
        spec = parse_spec(obj.get("spec"))
    except SpecError as exc:
        return Verdict(False, "denied", str(exc), INVALID_CODE, "BadRequest")
    return Verdict(True, "allowed", warnings=list(spec.warnings))
