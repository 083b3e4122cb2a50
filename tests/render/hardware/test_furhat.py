"""The Furhat driver against a stand-in for the Remote API skill: a local HTTP server that checks every
request against the documented API (https://docs.furhat.io/remote-api/: endpoints, methods, the
GestureDefinition / Frame / BasicParam models and their ranges) and records it.

The documented names below are copied from those docs, not from the driver, so the driver is checked
against the API rather than against itself.
"""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from render.hardware.base import DeviceLost, DeviceNotFound, HardwareError
from render.hardware.furhat import FURHAT_PROFILE, FurhatRobot

# From the Remote API docs: "API Endpoints" and the "GestureDefinition examples" list of BasicParams.
DOCUMENTED_ENDPOINTS = {("POST", "/furhat/attend"), ("POST", "/furhat/face"), ("POST", "/furhat/visibility"),
                        ("POST", "/furhat/gesture"), ("POST", "/furhat/led"), ("GET", "/furhat/listen"),
                        ("POST", "/furhat/listen/stop"), ("POST", "/furhat/say"), ("POST", "/furhat/say/stop"),
                        ("POST", "/furhat/voice"), ("GET", "/furhat/gestures"), ("GET", "/furhat"),
                        ("GET", "/furhat/users"), ("GET", "/furhat/voices")}
UNIT_PARAMS = set("""EXPR_ANGER EXPR_DISGUST EXPR_FEAR EXPR_SAD SMILE_CLOSED SMILE_OPEN SURPRISE BLINK_LEFT
BLINK_RIGHT BROW_DOWN_LEFT BROW_DOWN_RIGHT BROW_IN_LEFT BROW_IN_RIGHT BROW_UP_LEFT BROW_UP_RIGHT EYE_SQUINT_LEFT
EYE_SQUINT_RIGHT LOOK_DOWN LOOK_LEFT LOOK_RIGHT LOOK_UP PHONE_AAH PHONE_B_M_P PHONE_BIGAAH PHONE_CH_J_SH
PHONE_D_S_T PHONE_EE PHONE_EH PHONE_F_V PHONE_I PHONE_K PHONE_N PHONE_OH PHONE_OOH_Q PHONE_R PHONE_TH PHONE_W
LOOK_DOWN_LEFT LOOK_DOWN_RIGHT LOOK_LEFT_LEFT LOOK_LEFT_RIGHT LOOK_RIGHT_LEFT LOOK_RIGHT_RIGHT LOOK_UP_LEFT
LOOK_UP_RIGHT""".split())
DEGREE_PARAMS = {"NECK_TILT", "NECK_PAN", "NECK_ROLL", "GAZE_PAN", "GAZE_TILT"}   # −50..50


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def gesture_problems(query: dict, body) -> list[str]:
    """What is wrong with a POST /furhat/gesture by the documented schema ([] when nothing)."""
    problems = []
    if not set(query) <= {"name", "blocking"}:
        problems.append(f"unknown query parameters {sorted(set(query) - {'name', 'blocking'})}")
    if "blocking" in query and query["blocking"] not in (["true"], ["false"]):
        problems.append(f"blocking must be a boolean, got {query['blocking']}")
    if not isinstance(body, dict) or not set(body) <= {"name", "frames", "class"}:
        return problems + [f"a GestureDefinition has name, frames, class; got {body!r:.200}"]
    if body.get("class") != "furhatos.gestures.Gesture":
        problems.append("class must be furhatos.gestures.Gesture")
    if not isinstance(body.get("name", ""), str):
        problems.append("name must be a string")
    frames = body.get("frames")
    if not isinstance(frames, list) or not frames:
        return problems + ["frames must be a non-empty list"]
    for k, frame in enumerate(frames):
        if not isinstance(frame, dict) or not set(frame) <= {"time", "persist", "params"}:
            problems.append(f"frame {k}: a Frame has time, persist, params; got {frame!r:.200}")
            continue
        times = frame.get("time")
        if not (isinstance(times, list) and times and all(_number(t) and t >= 0 for t in times)):
            problems.append(f"frame {k}: time must be a list of seconds, got {times!r}")
        if "persist" in frame and not isinstance(frame["persist"], bool):
            problems.append(f"frame {k}: persist must be a boolean")
        params = frame.get("params")
        if not isinstance(params, dict) or not params:
            problems.append(f"frame {k}: params must be an object of BasicParams")
            continue
        for name, value in params.items():
            if name == "reset":
                ok = value is True
            elif name in UNIT_PARAMS:
                ok = _number(value) and 0.0 <= value <= 1.0
            elif name in DEGREE_PARAMS:
                ok = _number(value) and -50.0 <= value <= 50.0
            else:
                ok = False
            if not ok:
                problems.append(f"frame {k}: {name}={value!r} is not a documented BasicParam value")
    return problems


class RemoteAPI:
    """A stand-in for the Remote API skill. `die_after_gestures`: after that many gestures the server reads
    each request (and records it) but closes the connection without answering, as a crashed skill does."""

    def __init__(self, die_after_gestures=None):
        self.requests, self.problems = [], []
        self.die_after_gestures = die_after_gestures
        self.gestures_answered = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self, method):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                query = parse_qs(url.query)
                api.requests.append({"method": method, "path": url.path, "query": query, "body": body})
                if api.die_after_gestures is not None and api.gestures_answered >= api.die_after_gestures:
                    self.close_connection = True
                    return
                problems = []
                if (method, url.path) not in DOCUMENTED_ENDPOINTS:
                    problems.append(f"{method} {url.path} is not a Remote API endpoint")
                elif url.path == "/furhat/gesture":
                    problems = gesture_problems(query, body)
                    if body is not None and self.headers.get("Content-Type") != "application/json":
                        problems.append("a gesture body must be sent as application/json")
                api.problems += problems
                if url.path == "/furhat" and not problems:
                    payload, code, kind = b"hello world", 200, "text/plain"
                else:
                    status = {"success": not problems, "message": "; ".join(problems)}
                    payload, code, kind = json.dumps(status).encode(), 400 if problems else 200, "application/json"
                    api.gestures_answered += url.path == "/furhat/gesture" and not problems
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def gestures(self):
        return [r["body"] for r in self.requests if r["path"] == "/furhat/gesture"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote_api():
    with RemoteAPI() as api:
        yield api


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_three_frame_trajectory_is_one_custom_gesture(remote_api):
    robot = FurhatRobot(host="127.0.0.1", port=remote_api.port)
    robot.connect()
    #             brow L brow R  blink L blink R  pan   tilt  roll
    trajectory = [[0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5],
                  [0.5, 0.25, 1.0, 0.0, 0.75, 0.25, 0.5],
                  [1.2, 0.1, 0.0, 1.0, 1.0, 0.0, 0.6]]
    report = robot.play(trajectory, 25)

    assert remote_api.problems == []
    assert report.frames == 3 and report.clamped == 1
    expected = {
        "name": "render-trajectory-0",
        "frames": [
            {"time": [0.0], "persist": True,
             "params": {"BROW_UP_LEFT": 0.0, "BROW_UP_RIGHT": 0.0, "BLINK_LEFT": 0.0, "BLINK_RIGHT": 0.0,
                        "NECK_PAN": 0.0, "NECK_TILT": 0.0, "NECK_ROLL": 0.0}},
            {"time": [0.04], "persist": True,
             "params": {"BROW_UP_LEFT": 0.5, "BROW_UP_RIGHT": 0.25, "BLINK_LEFT": 1.0, "BLINK_RIGHT": 0.0,
                        "NECK_PAN": 15.0, "NECK_TILT": -15.0, "NECK_ROLL": 0.0}},
            {"time": [0.08], "persist": True,
             "params": {"BROW_UP_LEFT": 1.0, "BROW_UP_RIGHT": 0.1, "BLINK_LEFT": 0.0, "BLINK_RIGHT": 1.0,
                        "NECK_PAN": 30.0, "NECK_TILT": -30.0, "NECK_ROLL": 6.0}},
        ],
        "class": "furhatos.gestures.Gesture",
    }
    assert remote_api.gestures() == [expected]
    gesture_request = next(r for r in remote_api.requests if r["path"] == "/furhat/gesture")
    assert gesture_request["method"] == "POST" and gesture_request["query"] == {"blocking": ["false"]}
    # connect, the gesture, and the closing check that the robot still answers
    assert [(r["method"], r["path"]) for r in remote_api.requests] == [
        ("GET", "/furhat"), ("POST", "/furhat/gesture"), ("GET", "/furhat")]


def test_long_trajectories_go_in_chunks_posted_when_due(remote_api):
    robot = FurhatRobot(host="127.0.0.1", port=remote_api.port, chunk_s=0.4)
    robot.connect()
    start = robot.clock() + 0.05
    rest = np.array([a["rest"] for a in FURHAT_PROFILE["actuators"]])
    report = robot.play(np.tile(rest, (25, 1)), 25, start_at=start)     # 1 s: chunks of 10, 10, 5 frames

    assert remote_api.problems == []
    gestures = remote_api.gestures()
    assert [len(g["frames"]) for g in gestures] == [10, 10, 5]
    assert [g["frames"][-1]["time"] for g in gestures] == [[0.36], [0.36], [0.16]]   # times restart per chunk
    posted = np.array([entry[0] for entry in robot.sent_log]) - start
    assert [entry[1] for entry in robot.sent_log] == [0, 10, 20]
    assert np.all(posted >= np.array([0.0, 0.4, 0.8])) and np.all(posted < np.array([0.0, 0.4, 0.8]) + 0.05)
    assert report.frames == 25 and robot.clock() >= start + 1.0


def test_neutral_moves_every_parameter_to_rest_then_resets(remote_api):
    robot = FurhatRobot(host="127.0.0.1", port=remote_api.port)
    with robot:
        pass
    assert remote_api.problems == []
    assert remote_api.gestures() == [{
        "name": "render-neutral",
        "frames": [{"time": [0.5], "persist": False,
                    "params": {"BROW_UP_LEFT": 0.0, "BROW_UP_RIGHT": 0.0, "BLINK_LEFT": 0.0, "BLINK_RIGHT": 0.0,
                               "NECK_PAN": 0.0, "NECK_TILT": 0.0, "NECK_ROLL": 0.0}},
                   {"time": [0.6], "persist": False, "params": {"reset": True}}],
        "class": "furhatos.gestures.Gesture"}]
    assert robot.neutral_attempts[-1][1] == "sent"


def test_refused_connection_names_the_address_and_the_skill():
    port = _free_port()
    robot = FurhatRobot(host="127.0.0.1", port=port, timeout_s=1.0)
    with pytest.raises(DeviceNotFound, match=f"127.0.0.1:{port}.*connection refused.*Remote API skill"):
        robot.connect()
    assert not robot.health()["ok"]


def test_server_dying_mid_play_raises_device_lost_after_a_neutral_attempt():
    with RemoteAPI(die_after_gestures=2) as api:
        robot = FurhatRobot(host="127.0.0.1", port=api.port, chunk_s=0.2)
        robot.connect()
        trajectory = np.tile([0.3, 0.3, 0.0, 0.0, 0.6, 0.5, 0.5], (25, 1))
        with pytest.raises(DeviceLost, match="127.0.0.1:.*stopped answering at frame 10 of 25.*neutral could not"):
            robot.play(trajectory, 25)                         # chunks of 5 frames; the third is never answered

    assert api.problems == []
    names = [g["name"] for g in api.gestures()]
    assert names == ["render-trajectory-0", "render-trajectory-1", "render-trajectory-2", "render-neutral"]
    assert api.gestures()[-1]["frames"][-1]["params"] == {"reset": True}
    assert robot.neutral_attempts and robot.neutral_attempts[-1][1].startswith("failed")
    assert [entry[1] for entry in robot.sent_log] == [0, 5]


def test_a_refused_gesture_is_an_error_and_the_robot_is_sent_to_neutral(remote_api):
    profile = {**FURHAT_PROFILE, "actuators": FURHAT_PROFILE["actuators"][:2],
               "extra": {"furhat_params": {"upper.brow_left": "BROW_UP_LEFT"}}}
    robot = FurhatRobot(profile, host="127.0.0.1", port=remote_api.port)
    robot.connect()
    robot.params[0] = ("NOT_A_PARAM", None)                     # as if the robot ran an older API
    with pytest.raises(HardwareError, match="refused gesture 'render-trajectory-0'.*NOT_A_PARAM"):
        robot.play([[0.1, 0.2]], 25)
    assert robot.neutral_attempts                               # tried (and refused, with the same bad name)


def test_profiles_that_furhat_cannot_play_are_refused_up_front():
    jaw = {"name": "lower.jaw", "lower": 0.0, "upper": 1.0, "rest": 0.0}
    with pytest.raises(HardwareError, match="no gesture parameter for lower.jaw.*furhat_param"):
        FurhatRobot({**FURHAT_PROFILE, "actuators": FURHAT_PROFILE["actuators"] + [jaw]})
    FurhatRobot({**FURHAT_PROFILE, "actuators": FURHAT_PROFILE["actuators"] + [{**jaw, "furhat_param": "PHONE_AAH"}]})
    wide = dict(FURHAT_PROFILE["actuators"][4], pose_range_deg=[-60.0, 60.0])
    with pytest.raises(HardwareError, match="head.pan.*−50..50"):
        FurhatRobot({**FURHAT_PROFILE, "actuators": FURHAT_PROFILE["actuators"][:4] + [wide]})
    smile = {"name": "lower.smile_open", "lower": 0.0, "upper": 1.0, "rest": 0.0}
    robot = FurhatRobot({**FURHAT_PROFILE, "actuators": [smile]})
    assert robot.params == [("SMILE_OPEN", None)]


def test_health_reports_whether_the_api_answers():
    with RemoteAPI() as api:
        robot = FurhatRobot(host="127.0.0.1", port=api.port, timeout_s=1.0)
        assert robot.health()["ok"]
    assert not robot.health()["ok"]
