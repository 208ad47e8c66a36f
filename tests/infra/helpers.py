"""Small readers over a synthesized template (plain dicts)."""

from __future__ import annotations

from typing import Any

DATA_SERVICES = ("s3", "sqs", "sns", "dynamodb", "kms", "secretsmanager")


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def logical_id(raw: dict, rtype: str, **props) -> str:
    """The one resource of ``rtype`` whose Properties contain ``props``."""
    hits = [
        k
        for k, v in raw["Resources"].items()
        if v["Type"] == rtype and all(v.get("Properties", {}).get(p) == want for p, want in props.items())
    ]
    assert len(hits) == 1, f"{rtype} {props}: {hits}"
    return hits[0]


def policy_statements(raw: dict) -> list[tuple[str, dict]]:
    """(logical id, statement) for every identity policy statement (inline and AWS::IAM::Policy)."""
    out = []
    for lid, res in raw["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Policy":
            out += [(lid, s) for s in props["PolicyDocument"]["Statement"]]
        elif res["Type"] == "AWS::IAM::Role":
            for pol in props.get("Policies", []):
                out += [(lid, s) for s in pol["PolicyDocument"]["Statement"]]
    return out


def statements_of(raw: dict, role_id: str) -> list[dict]:
    """Statements of the AWS::IAM::Policy documents attached to ``role_id``."""
    out = []
    for res in raw["Resources"].values():
        if res["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in res["Properties"].get("Roles", []):
            out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def actions_on(statements: list[dict]) -> dict[str, list]:
    """action → resources it is allowed on."""
    out: dict[str, list] = {}
    for s in statements:
        if s.get("Effect") != "Allow":
            continue
        for action in as_list(s["Action"]):
            out.setdefault(action, []).extend(as_list(s.get("Resource", [])))
    return out


def is_tls_only(statements: list[dict]) -> bool:
    return any(
        s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in statements
    )
