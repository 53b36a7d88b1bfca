"""``/readyz``: the checks decide the status; a hot standby's role is shown, not a failure."""

from __future__ import annotations

from starlette.testclient import TestClient

from coinpilot.runtime.probes import build_probe_app


def client(checks: dict[str, bool], role: str | None = None, with_role: bool = True) -> TestClient:
    async def ready() -> dict[str, bool]:
        return checks

    return TestClient(build_probe_app(ready, (lambda: role) if with_role else None))


def test_a_standby_is_ready_and_says_so() -> None:
    response = client({"nats": True}, "standby").get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"nats": True}, "role": "standby"}


def test_a_failed_check_fails_an_active_replica_too() -> None:
    response = client({"nats": False}, "active").get("/readyz")
    assert response.status_code == 503 and response.json()["role"] == "active"


def test_without_standby_the_body_has_no_role() -> None:
    assert "role" not in client({"nats": True}, None).get("/readyz").json()
    assert "role" not in client({"nats": True}, with_role=False).get("/readyz").json()
