"""The compose deployment is complete and valid: docker-compose's own parser accepts it (no engine needed), it
wires every role, hands the app every setting production needs (and refuses to start without the secrets),
serves HTTPS in nginx by default with a plain-HTTP site for a host behind another TLS proxy, and keeps secrets
out of the image. With nginx installed, `nginx -t` checks both sites."""
import http.client
import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
SECRETS = {"SECRET_KEY": "s" * 50, "PARTICIPANT_ID_HMAC_KEY": "h" * 50, "POSTGRES_PASSWORD": "pw"}

# Every setting evalsite/settings.py reads must reach the app's containers from the compose file or the image
# (docker/Dockerfile's ENV), or be left at a default that is right for production, for the reason given here.
LEFT_AT_DEFAULT = {
    "DEBUG": "follows EVALSITE_ENV: off in production",
    "DB_CONN_MAX_AGE": "60 s persistent connections suit gunicorn's threads",
    "DB_PREPARED_STATEMENTS": "on: the compose file connects straight to PostgreSQL, with no pooler in between",
    "PARTICIPANT_RATE_LIMITS": "the defaults are the production limits (docs/security.md)",
    "SECURE_HSTS_SECONDS": "one year; over the bundled nginx's HTTPS, nginx sends HSTS itself",
    "CELERY_VISIBILITY_TIMEOUT": "an hour: longer than any task",
    "CELERY_RESULT_BACKEND": "none needed: tasks report progress in the database",
    "CELERY_TASK_ALWAYS_EAGER": "for tests only",
}
# What the web service's environment must hold: the value production needs, or None for the operator's own.
REQUIRED = {
    "EVALSITE_ENV": "production",
    "SECRET_KEY": SECRETS["SECRET_KEY"],
    "PARTICIPANT_ID_HMAC_KEY": SECRETS["PARTICIPANT_ID_HMAC_KEY"],
    "ALLOWED_HOSTS": None,
    "CSRF_TRUSTED_ORIGINS": None,
    "PUBLIC_BASE_URL": None,
    "PARTICIPANT_FRAME_ANCESTORS": None,
    "DATABASE_URL": None,
    "CELERY_BROKER_URL": None,
    "CACHE_URL": None,
    "RATE_LIMIT_CLIENT_IP_HEADER": "HTTP_X_REAL_IP",
    "MEDIA_ACCEL_REDIRECT_PREFIX": "/protected-media/",
    "REPORTS_ROOT": "/data/reports",
    "SECURE_SSL_REDIRECT": "false",  # nginx (or the proxy before it) redirects to HTTPS
}
SITES = {"nginx.conf": "HTTPS here", "nginx-behind-proxy.conf": "plain HTTP behind another TLS proxy"}


def compose_config(tmp_path, **env) -> subprocess.CompletedProcess:
    """`docker-compose config` with exactly these variables: no docker/.env and none of the caller's."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing; the test command installs it (Debian package docker-compose)")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    clean = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run([exe, "--env-file", str(empty), "-f", str(COMPOSE), "config"], env={**clean, **env},
                          capture_output=True, text=True)


def resolved(tmp_path, **env) -> dict:
    r = compose_config(tmp_path, **SECRETS, **env)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def published(service: dict) -> set[tuple[str, str]]:
    """(host address:port, container port) of each published port, however docker-compose writes it."""
    out = set()
    for port in service["ports"]:
        if isinstance(port, dict):
            host = f"{port['host_ip']}:{port['published']}" if port.get("host_ip") else str(port["published"])
            out.add((host, str(port["target"])))
        else:
            host, _, target = port.split("/")[0].rpartition(":")
            out.add((host, target))
    return out


def settings_read() -> set[str]:
    text = (ROOT / "evalsite" / "settings.py").read_text()
    return set(re.findall(r'(?:environ\.get|_env_bool|_env_list)\(\s*"([A-Z][A-Z0-9_]+)"', text))


def test_compose_file_validates_and_has_every_service(tmp_path):
    config = resolved(tmp_path)
    assert set(config["services"]) == {"postgres", "redis", "web", "worker", "hardware", "nginx"}
    assert "hardware" in config["services"]["hardware"]["command"]
    assert config["services"]["web"]["environment"]["CELERY_BROKER_URL"].startswith("redis://")
    assert config["services"]["web"]["environment"]["CACHE_URL"].startswith("redis://")  # shared rate limits


def test_each_worker_is_health_checked_for_the_queues_it_consumes():
    """The healthcheck asks celery inspect for exactly the queues the worker's command consumes."""
    config = yaml.safe_load(COMPOSE.read_text())
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    default_worker = dockerfile.split("FROM base AS worker", 1)[1]
    for name in ("worker", "hardware"):
        service = config["services"][name]
        command = service.get("command") or default_worker
        command = " ".join(command) if isinstance(command, list) else command
        consumed = set(command.split("-Q", 1)[1].replace('"', " ").replace(",", " ").split()[0:2]) & {
            "inference", "render", "hardware"}
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "manage.py", "worker_health"] and "--this-host" in test
        checked = {test[i + 1] for i, arg in enumerate(test) if arg == "--queue"}
        assert checked == consumed, (name, checked, consumed)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_secrets(missing, tmp_path):
    r = compose_config(tmp_path, **{k: v for k, v in SECRETS.items() if k != missing})
    assert r.returncode != 0 and f"set {missing}" in (r.stderr + r.stdout)


def test_the_app_gets_every_setting_production_needs(tmp_path):
    config = resolved(tmp_path)
    web = config["services"]["web"]["environment"]
    missing = {name for name in REQUIRED if name not in web}
    assert not missing, f"docker/compose.yml does not pass {sorted(missing)} to the web service"
    wrong = {name: web[name] for name, value in REQUIRED.items() if value is not None and web[name] != value}
    assert not wrong, wrong
    assert web["PUBLIC_BASE_URL"].startswith("https://")
    assert "https://worker.mturk.com" in web["PARTICIPANT_FRAME_ANCESTORS"]  # MTurk's frame, by default
    for role in ("worker", "hardware"):  # the same settings everywhere the app runs
        assert config["services"][role]["environment"] == web, role
    dockerfile = (DOCKER / "Dockerfile").read_text()
    in_image = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", " ".join(
        line for line in dockerfile.splitlines() if line.startswith("ENV") or line.startswith(" "))))
    assert {"SECRET_KEY", "DATABASE_URL", "DEBUG", "PARTICIPANT_FRAME_ANCESTORS"} <= settings_read()  # the reader works
    unaccounted = settings_read() - set(web) - in_image - set(LEFT_AT_DEFAULT)
    assert not unaccounted, (f"evalsite/settings.py reads {sorted(unaccounted)}: pass them in docker/compose.yml's "
                             "x-app-env, or say in LEFT_AT_DEFAULT why the default suits production")


def test_the_operators_settings_reach_the_app(tmp_path):
    ours = {"ALLOWED_HOSTS": "study.example.org", "PUBLIC_BASE_URL": "https://study.example.org",
            "CSRF_TRUSTED_ORIGINS": "https://study.example.org",
            "PARTICIPANT_FRAME_ANCESTORS": "https://lab.example.org"}
    web = resolved(tmp_path, **ours)["services"]["web"]["environment"]
    assert {k: web[k] for k in ours} == ours


def test_nginx_serves_https_by_default_and_plain_http_behind_another_proxy(tmp_path):
    default = resolved(tmp_path)["services"]["nginx"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in default["volumes"]}
    assert Path(mounts["/etc/nginx/conf.d/default.conf"]) == DOCKER / "nginx.conf"
    assert {target for _, target in published(default)} == {"80", "443"}
    behind = resolved(tmp_path, NGINX_SITE="nginx-behind-proxy.conf", NGINX_HTTP_PORT="127.0.0.1:8080",
                      NGINX_HTTPS_PORT="127.0.0.1:8443", TLS_CERT_DIR="/srv/tls")["services"]["nginx"]
    behind_mounts = {v.split(":")[1]: v.split(":")[0] for v in behind["volumes"]}
    assert Path(behind_mounts["/etc/nginx/conf.d/default.conf"]) == DOCKER / "nginx-behind-proxy.conf"
    assert behind_mounts["/etc/nginx/tls"] == "/srv/tls"
    assert published(behind) == {("127.0.0.1:8080", "80"), ("127.0.0.1:8443", "443")}

    tls = (DOCKER / "nginx.conf").read_text()
    plain = (DOCKER / "nginx-behind-proxy.conf").read_text()
    locations = (DOCKER / "nginx-locations.conf").read_text()
    # HTTPS: the certificate and key from the mounted folder, port 80 only redirects, HSTS on every response
    assert "listen 443 ssl;" in tls
    assert re.search(r"ssl_certificate /etc/nginx/tls/\S+;", tls)
    assert re.search(r"ssl_certificate_key /etc/nginx/tls/\S+;", tls)
    port_80 = tls.split("listen 443", 1)[0]
    assert "return 301 https://$host$request_uri;" in port_80 and "proxy_pass" not in port_80
    assert "Strict-Transport-Security $evalsite_hsts always;" in tls and 'set $evalsite_hsts "max-age=' in tls
    assert "proxy_set_header X-Forwarded-Proto https;" in tls
    # behind a proxy: no TLS, no redirect, the outer proxy's scheme and the client's address passed on
    assert "ssl" not in plain.replace("TLS", "") and "return 301" not in plain
    assert "proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;" in plain
    assert "real_ip_header X-Forwarded-For;" in plain and 'set $evalsite_hsts "";' in plain
    # both serve videos the same way: only by the app's X-Accel-Redirect, from the media volume
    for site in (tls, plain):
        assert "include /etc/nginx/evalsite-locations.conf;" in site
        assert "proxy_set_header X-Real-IP $remote_addr;" in site
    assert Path(mounts["/etc/nginx/evalsite-locations.conf"]) == DOCKER / "nginx-locations.conf"
    protected = re.search(r"location /protected-media/ \{(.*?)\}", locations, re.S).group(1)
    assert "internal;" in protected and "alias /data/media/;" in protected and "$evalsite_hsts" in protected
    assert mounts["/data/media"] == "media"


def test_secrets_stay_out_of_git_and_out_of_the_image():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "docker/.env" in ignored and "docker/tls/" in ignored
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert {"**/.env", "docker/tls", ".git", ".venv", "var"} <= set(dockerignore)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_site(site: str, root: Path, *, upstream_port: int = 8000) -> tuple[str, Path, dict[int, int]]:
    """The nginx binary and a main config that runs docker/`site` as compose mounts it, made runnable here: the
    included locations file, a self-signed certificate in place of the mounted one, `root`/media and
    `root`/static for the volumes, 127.0.0.1:`upstream_port` for the `web` service, free local ports for the
    ones it listens on (returned as {site's port: local port}). Skips where nginx or openssl is missing."""
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed here (the tests do not install it): the sites were not checked with "
                    "nginx itself; the other tests of this file check their content")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed here: no certificate to check the HTTPS site with")
    for folder in ("tls", "media", "static", "logs"):
        (root / folder).mkdir()
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(root / "tls" / "privkey.pem"), "-out", str(root / "tls" / "fullchain.pem")],
                   check=True, capture_output=True)
    where = {"/etc/nginx/evalsite-locations.conf": str(root / "evalsite-locations.conf"),
             "/etc/nginx/tls/": f"{root}/tls/", "/data/media/": f"{root}/media/", "/data/static/": f"{root}/static/",
             "server web:8000;": f"server 127.0.0.1:{upstream_port};"}
    ports = {}
    for name, target in (("nginx-locations.conf", "evalsite-locations.conf"), (site, "site.conf")):
        text = (DOCKER / name).read_text()
        for inside, here in where.items():
            text = text.replace(inside, here)
        text = re.sub(r"^\s*listen \[::\]:\d+.*$", "", text, flags=re.M)
        for port in sorted(set(re.findall(r"listen (\d+)", text))):
            ports[int(port)] = _free_port()
            text = re.sub(rf"listen {port}\b", f"listen 127.0.0.1:{ports[int(port)]}", text)
        (root / target).write_text(text)
    temp_paths = "".join(f"  {kind}_temp_path {root}/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = root / "nginx.conf"
    main.write_text(f"pid {root}/nginx.pid;\nerror_log {root}/logs/error.log;\ndaemon off;\nmaster_process off;\n"
                    f"events {{}}\nhttp {{\n  access_log off;\n{temp_paths}  include {root}/site.conf;\n}}\n")
    return nginx, main, ports


@pytest.mark.parametrize("site", sorted(SITES))
def test_nginx_accepts_each_site(site, tmp_path):
    nginx, main, _ = nginx_site(site, tmp_path)
    r = subprocess.run([nginx, "-t", "-p", f"{tmp_path}/", "-c", str(main), "-e", f"{tmp_path}/logs/error.log"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"nginx -t refused docker/{site} ({SITES[site]}):\n{r.stderr}"


class FakeApp(http.server.BaseHTTPRequestHandler):
    """Stands in for gunicorn: /v/… answers as studies.views.media does behind nginx (an empty response with
    X-Accel-Redirect), anything else a page with Django's own HSTS header; it keeps each request's headers."""

    seen: list = []

    def do_GET(self):
        FakeApp.seen.append(dict(self.headers))
        self.send_response(200)
        if self.path.startswith("/v/"):
            self.send_header("X-Accel-Redirect", "/protected-media/stimuli/clip.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"a page"
        self.send_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains; preload")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def running_site(tmp_path):
    """Starts docker/SITE in nginx (as nginx_site makes it runnable) before the fake app; yields the ports."""
    started = []
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApp)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    FakeApp.seen = []

    def start(site: str) -> dict[int, int]:
        nginx, main, ports = nginx_site(site, tmp_path, upstream_port=app.server_address[1])
        (tmp_path / "media" / "stimuli").mkdir()
        (tmp_path / "media" / "stimuli" / "clip.mp4").write_bytes(bytes(range(256)) * 4)
        proc = subprocess.Popen([nginx, "-p", f"{tmp_path}/", "-c", str(main), "-e", f"{tmp_path}/logs/error.log"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", next(iter(ports.values()))), timeout=0.1).close()
                return ports
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"nginx stopped at once: {proc.stderr.read().decode()}")
                time.sleep(0.05)
        pytest.fail("nginx did not start listening within 5 s")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)
    app.shutdown()


def fetch(url: str, headers: dict | None = None):
    """(status, headers as a list of pairs, body) without following redirects or checking the certificate."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", target, headers={"Host": "study.example.org", **(headers or {})})
    response = conn.getresponse()
    out = response.status, response.getheaders(), response.read()
    conn.close()
    return out


def header(pairs, name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name.lower()]


def test_nginx_https_site_redirects_sends_hsts_once_and_hands_over_video_ranges(running_site):
    ports = running_site("nginx.conf")
    status, headers, _ = fetch(f"http://127.0.0.1:{ports[80]}/s/TOKEN/?a=1")
    assert status == 301 and header(headers, "Location") == ["https://study.example.org/s/TOKEN/?a=1"]
    status, headers, body = fetch(f"https://127.0.0.1:{ports[443]}/v/TOKEN.mp4", {"Range": "bytes=10-19"})
    assert status == 206 and body == bytes(range(10, 20)), (status, headers)
    assert header(headers, "Content-Range") == ["bytes 10-19/1024"]
    assert len(header(headers, "Strict-Transport-Security")) == 1
    assert header(headers, "Cache-Control") == ["private, max-age=3600"]
    assert FakeApp.seen[-1]["X-Forwarded-Proto"] == "https" and FakeApp.seen[-1]["X-Real-IP"] == "127.0.0.1"
    status, headers, _ = fetch(f"https://127.0.0.1:{ports[443]}/a-page/")
    assert status == 200 and header(headers, "Strict-Transport-Security") == [
        "max-age=31536000; includeSubDomains; preload"]  # nginx's, Django's hidden: one header
    status, _, _ = fetch(f"https://127.0.0.1:{ports[443]}/protected-media/stimuli/clip.mp4")
    assert status == 404  # only the app's hand-over reaches the videos


def test_nginx_site_behind_a_proxy_serves_plain_http_and_passes_the_proxys_facts(running_site):
    ports = running_site("nginx-behind-proxy.conf")
    assert set(ports) == {80}
    outer = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    status, headers, body = fetch(f"http://127.0.0.1:{ports[80]}/v/TOKEN.mp4", {"Range": "bytes=0-3", **outer})
    assert status == 206 and body == bytes(range(4)) and not header(headers, "Strict-Transport-Security")
    seen = FakeApp.seen[-1]
    assert seen["X-Forwarded-Proto"] == "https" and seen["X-Real-IP"] == "203.0.113.9"
    status, _, _ = fetch(f"http://127.0.0.1:{ports[80]}/protected-media/stimuli/clip.mp4", outer)
    assert status == 404
