"""End to end: the embedded runtime as `make run` starts it, over real HTTP.

Starts ``python -m local run`` in a subprocess (what ``make run`` does), runs
the README's curl walk-through exactly as written, and checks that data
survives a restart and that Ctrl-C stops the runtime cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local.runtime import free_port
from local.template import project_root

ROOT = project_root()
pytestmark = pytest.mark.e2e


@dataclass
class Running:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        return output


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = f"{ROOT / 'layers' / 'herald'}{os.pathsep}{ROOT}"
    return env


def start(data_file: Path, port: int | None = None, time_scale: float = 1.0) -> Running:
    port = port or free_port()
    command = [sys.executable, "-m", "local", "run", "--port", str(port), "--data", str(data_file)]
    process = subprocess.Popen(
        [*command, "--time-scale", str(time_scale)],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Running(process, port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"runtime exited early:\n{process.stdout.read() if process.stdout else ''}")
        try:
            if running.request("GET", "/openapi.json")[0] == 200:
                return running
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError("runtime did not start in time")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path / "data.json")
    yield running
    if running.process.poll() is None:
        running.stop()


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Walk-through", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("curl ")]


def wait_until_gone(runtime: Running, path: str, timeout: float = 60.0) -> None:
    """A forced deletion runs in a state machine: wait until the item answers 404."""
    deadline = time.monotonic() + timeout
    while runtime.request("GET", path)[0] != 404 and time.monotonic() < deadline:
        time.sleep(0.2)


def test_readme_walkthrough_runs_as_written(runtime: Running) -> None:
    statuses = []
    outputs = []
    for command in readme_commands():
        local_command = command.replace("localhost:3000", f"127.0.0.1:{runtime.port}")
        if "localhost:3000/groups'" not in command and command.endswith("localhost:3000/groups"):
            wait_until_gone(runtime, "/groups/vip")  # the README says "a moment later": let the deletion finish
        result = subprocess.run(
            f"{local_command} -w '\\n%{{http_code}}'", shell=True, capture_output=True, text=True, timeout=60
        )
        body, _, status = result.stdout.rpartition("\n")
        statuses.append(int(status))
        outputs.append(json.loads(body) if body else None)
    assert statuses == [201, 201, 201, 200, 422, 200, 409, 200, 200, 200, 409, 202, 200]
    imported = outputs[3]["totals"]
    assert imported == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    assert [e["field"] for e in outputs[4]["errors"]] == ["phone", "status"]
    assert outputs[6]["current_version"] == 2
    assert [c["contact_id"] for c in outputs[8]["items"]] == ["ada"]
    assert [g["group_id"] for g in outputs[-1]["items"]] == ["wholesale"]


def segment_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Segments walk-through", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("curl ")]


def wait_until_ready(runtime: Running, paths: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for path in paths:
        while True:
            status, body = runtime.request("GET", path)
            if status == 200 and body["state"] == "Ready":
                break
            assert time.monotonic() < deadline, f"{path} still {body}"
            time.sleep(0.2)


def test_readme_segments_walkthrough_runs_as_written(runtime: Running) -> None:
    statuses = []
    outputs = []
    for command in segment_commands():
        if "/segments/prague-buyers/members" in command:
            # "A moment later": the recalculation workers fill both through SQS.
            wait_until_ready(runtime, ["/segments/prague-buyers", "/audiences/spring-sale"])
        local_command = command.replace("localhost:3000", f"127.0.0.1:{runtime.port}")
        result = subprocess.run(
            f"{local_command} -w '\\n%{{http_code}}'", shell=True, capture_output=True, text=True, timeout=60
        )
        body, _, status = result.stdout.rpartition("\n")
        statuses.append(int(status))
        outputs.append(json.loads(body) if body else None)
    assert statuses == [201, 201, 201, 200, 200, 201, 201, 200, 200, 200, 422]
    assert [outputs[2]["duplicate"], outputs[3]["duplicate"]] == [False, True]
    assert outputs[4]["size"] == 2
    assert [m["contact_id"] for m in outputs[7]["items"]] == ["mia"]
    audience = outputs[8]
    assert audience["member_count"] == 1 and audience["excluded"]["soft_bounces"] == 1
    explained = outputs[9]
    assert explained["matches"] is False and explained["member"] is False
    assert explained["explanation"]["children"][1]["seen"] == {"count": 0}
    assert outputs[10]["errors"][0]["field"] == "rule.any[0].op"


def campaign_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Campaign walk-through", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("curl ")]


def wait_until_settled(runtime: Running, campaign_ids: list[str], timeout: float = 60.0) -> None:
    """The sender polls the delivery queue: wait until every enrolment's send has an outcome."""
    deadline = time.monotonic() + timeout
    for campaign_id in campaign_ids:
        while True:
            _, stats = runtime.request("GET", f"/campaigns/{campaign_id}/stats")
            settled = stats["sent"] + stats["deferred"] + stats["suppressed"] + stats["expired"] + stats["failed"]
            if stats["enrolled"] and settled >= stats["enrolled"]:
                break
            assert time.monotonic() < deadline, f"{campaign_id} not settled: {stats}"
            time.sleep(0.2)


def test_readme_campaign_walkthrough_runs_as_written(runtime: Running) -> None:
    statuses = []
    outputs = []
    for command in campaign_commands():
        if command.endswith("/campaigns/club-winter/stats"):
            wait_until_settled(runtime, ["club-winter", "club-flash"])  # "a moment later"
        local_command = command.replace("localhost:3000", f"127.0.0.1:{runtime.port}")
        result = subprocess.run(
            f"{local_command} -w '\\n%{{http_code}}'", shell=True, capture_output=True, text=True, timeout=120
        )
        body, _, status = result.stdout.rpartition("\n")
        statuses.append(int(status))
        outputs.append(json.loads(body) if body else None)
        if os.environ.get("HERALD_PRINT_WALKTHROUGH"):
            print(json.dumps(outputs[-1], separators=(",", ":")))
    assert statuses == [201, 201, 201, 201, 201, 201, 200, 409, 200, 200, 200, 200, 201, 200, 200, 200, 200, 200, 200]
    checklist = {item["item"]: item["ok"] for item in outputs[6]["items"]}
    assert checklist == {"name_description": True, "target_rules": True, "actions_content": True, "tested": False}
    assert [f["item"] for f in outputs[7]["failing"]] == ["tested"]
    ada, cy = outputs[8], outputs[9]
    assert ada["targeting"]["matches"] is True and ada["actions"][0]["would_send"] is True
    assert ada["actions"][0]["rendered"]["subject"] == "Ada, 25% off for you"
    assert cy["actions"][0]["held_back"][0]["by"] == "consent"
    assert outputs[10]["days"][0]["sends"] == 1 and outputs[10]["held_back"] == 1
    assert outputs[11]["state"] == "Launched" and outputs[11]["launch"]["forced"] is False
    assert outputs[13]["launch"]["forced"] is True
    tick = outputs[14]["campaigns"]
    assert tick["club-winter"]["enrolled"] == 2 and tick["club-flash"]["enrolled"] == 2
    winter, flash = outputs[15], outputs[16]
    assert (winter["sent"], winter["suppressed_by_reason"], winter["in_campaign_pct"]) == (1, {"no_consent": 1}, 100.0)
    assert (flash["sent"], flash["deferred"], flash["suppressed"]) == (0, 1, 1)  # the daily cap: Ada's waits
    assert {e["campaign_id"]: e["state"] for e in outputs[17]["items"]} == {
        "club-flash": "active",
        "club-winter": "active",
    }
    again = outputs[18]
    assert again["queued_sends"] == 0 and again["campaigns"]["club-winter"]["enrolled"] == 0


def run_campaign_walkthrough(runtime: Running) -> None:
    for command in campaign_commands():
        if command.endswith("/campaigns/club-winter/stats"):
            wait_until_settled(runtime, ["club-winter", "club-flash"])
        local_command = command.replace("localhost:3000", f"127.0.0.1:{runtime.port}")
        subprocess.run(local_command, shell=True, capture_output=True, text=True, timeout=120, check=True)


def email_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Email, unsubscribe and webhooks", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith(("curl ", "TOKEN="))]


def test_readme_email_and_unsubscribe_round_trip_runs_as_written(runtime: Running) -> None:
    run_campaign_walkthrough(runtime)
    lines = [line.replace("localhost:3000", f"127.0.0.1:{runtime.port}") for line in email_block()]
    # one bash script, so TOKEN carries over; each curl reports its status after a marker
    script = "\n".join(f"{line} -w '\\n@@@%{{http_code}}\\n'" if line.startswith("curl ") else line for line in lines)
    result = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    parts = result.stdout.split("@@@")
    statuses = [int(part[:3]) for part in parts[1:]]
    bodies = [parts[0]] + [part[4:] for part in parts[1:-1]]
    assert statuses == [200, 200, 200, 200, 200, 403, 200], (statuses, result.stdout[-2000:])
    outbox = json.loads(bodies[0])
    raw = outbox["items"][0]["raw"]
    assert "List-Unsubscribe: <http://127.0.0.1:" in raw and "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert "Subject: Ada, 25% off for you" in raw and "Herald Demo Ltd" in raw and "/preferences?token=" in raw
    assert "Unsubscribe?" in bodies[1] and "<form" in bodies[1]
    assert "You are unsubscribed" in bodies[2] and "You are unsubscribed" in bodies[3]
    assert "preferences" in bodies[4].lower()
    assert json.loads(bodies[5])["error"] == "forbidden"
    assert json.loads(bodies[6])["unsubscribed"] == 1
    _, messages = runtime.request("GET", "/contacts/ada/messages")
    assert [m["status"] for m in messages["items"]].count("sent") == 1


def flow_section() -> tuple[str, list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Campaign flows", 1)[1].split("\n## ", 1)[0]
    flow_json = section.split("```json", 1)[1].split("```", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith(("curl ", "FLOW=", "sleep ", "until "))]
    return flow_json, lines


def test_readme_flow_demo_runs_as_written_in_seconds(tmp_path: Path) -> None:
    """``make run TIME_SCALE=86400``: the README's flow of 2- and 7-day delays finishes in seconds, in order."""
    flow_json, lines = flow_section()
    (tmp_path / "onboarding.json").write_text(flow_json)
    running = start(tmp_path / "data.json", time_scale=86400)
    try:
        local = [line.replace("localhost:3000", f"127.0.0.1:{running.port}") for line in lines]
        script = "\n".join(
            f"{line} -w '\\n@@@%{{http_code}}\\n'" if line.startswith("curl ") else line for line in local
        )
        result = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        running.stop()
    assert result.returncode == 0, result.stderr
    parts = result.stdout.split("@@@")
    statuses = [int(part[:3]) for part in parts[1:]]
    bodies = [parts[0]] + [part[4:] for part in parts[1:-1]]
    assert statuses == [201, 201, 201, 200, 200, 201, 200, 200], (statuses, result.stdout[-3000:])
    assert json.loads(bodies[3])["status"] == "active"
    assert json.loads(bodies[4])["started"]  # their cohort (two, if the segment filled across a window)
    stats = {s["step_id"]: s["counters"] for s in json.loads(bodies[6])["steps"]}
    assert (stats["opened"]["yes"], stats["opened"]["no"]) == (1, 1), stats
    rows = [line.split(",") for line in bodies[7].strip().splitlines()[1:]]
    walked = {contact: [r[2] for r in rows if r[0] == contact] for contact in ("lea", "max")}
    assert walked == {
        "lea": ["welcome", "wait-2d", "opened", "wait-7d", "offer"],
        "max": ["welcome", "wait-2d", "opened", "nudge"],
    }
    sends = {(r[0], r[2]): r[8] for r in rows if r[5] == "queued"}
    assert set(sends.values()) == {"sent"} and len(sends) == 4


def test_data_survives_a_restart_and_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    data_file = tmp_path / "data.json"
    first = start(data_file)
    assert first.request("POST", "/contacts", {"contact_id": "kept", "kind": "customer"})[0] == 201
    output = first.stop()
    assert first.process.returncode == 0
    assert "Herald embedded runtime" in output
    assert re.search(r"Saved \d+ items", output)
    assert output.rstrip().endswith("Stopped.")
    second = start(data_file)
    try:
        status, body = second.request("GET", "/contacts/kept")
        assert status == 200
        assert body["version"] == 1
    finally:
        second.stop()


def test_invoke_runs_one_function_on_one_event(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "local",
        "invoke",
        "api",
        "events/api/get-contact.json",
        "--data",
        str(tmp_path / "data.json"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["id"] == "cust-0001"
