#!/usr/bin/env python3
"""wharf vs the distribution registry in proxy mode vs an nginx proxy_cache, one run, one table.

Everything runs on loopback: a docker-registry upstream seeded with generated images (one 512 MiB
layer of random bytes, an image of 50 small layers, a small manifest), and the three mirrors in front
of it. Each measurement is repeated REPS times (default 5) and the median is reported. The machine is
shared and noisy, and the load generator shares its 2 cores with the servers: compare within a run.

A second table holds the rows production feels most, wharf against nginx only: HTTPS with HTTP/1.1
(wrk) and HTTP/2 (h2load), both servers on the same self-signed certificate; p50/p99/p99.9 latency of
a 1.6 MiB blob at 16, 64 and 256 connections, plain and HTTPS; 64 concurrent pulls of the big blob
from cache; a cold pull of the big blob against a direct one. ROWS=prod runs only that table,
ROWS=base only the first; the default (ROWS=all) runs both.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPS = int(os.environ.get("REPS", "5"))
WRK_DURATION = os.environ.get("WRK_DURATION", "3s")
BIG = 512 * 1024 * 1024
CONCURRENCY = [16, 64, 256]
MID = 1677722  # the "1.6 MiB" blob: a typical small layer, large enough to stream, small enough to hit often
ROWS = os.environ.get("ROWS", "all")
if ROWS not in ("all", "prod", "base"):
    raise SystemExit(f"ROWS={ROWS}: expected all (the default), prod (only the production table) or base")
H2_STREAMS = 10  # h2load -m: concurrent streams per HTTP/2 connection
PULLS = 64  # concurrent clients pulling the big blob from cache


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20):
    # The HTTPS listeners use a self-signed certificate made for this run.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1, context=context)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def rss_kib(pid):
    """Peak RSS (VmHWM) of a process and its children, in KiB."""
    total = 0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    status = f.read()
                if re.search(rf"^PPid:\s+{pid}$", status, re.M):
                    pids.append(int(entry))
            except OSError:
                pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"^VmHWM:\s+(\d+)", f.read(), re.M)
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def reset_peak_rss(pid):
    """Reset VmHWM of a process and its children to their current RSS (`clear_refs` 5), so the next
    rss_kib() is the peak of what happened since. False if the kernel refused."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    if re.search(rf"^PPid:\s+{pid}$", f.read(), re.M):
                        pids.append(int(entry))
            except OSError:
                pass
    try:
        for p in pids:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
    except OSError:
        return False
    return True


class Server:
    """A server process with its own state directory; restartable with an empty cache."""

    def __init__(self, name, work, make_cmd, https=False, tls_port=None):
        self.name, self.work, self.make_cmd = name, work, make_cmd
        self.https = https  # the one listener speaks HTTPS (wharf with tls_cert/tls_key)
        self.tls_port = tls_port  # a second, HTTPS listener next to the plain one (nginx)
        self.port = free_port()
        self.proc = None
        self.peak = 0
        SERVERS.append(self)

    @property
    def url(self):
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    @property
    def tls_url(self):
        return self.url if self.https else f"https://127.0.0.1:{self.tls_port}"

    def start(self, fresh):
        state = os.path.join(self.work, self.name)
        if fresh and os.path.exists(state):
            shutil.rmtree(state)
        os.makedirs(state, exist_ok=True)
        cmd = self.make_cmd(state, self.port)
        log = open(os.path.join(self.work, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        wait_http(self.url + "/v2/")

    def sample_rss(self):
        if self.proc:
            self.peak = max(self.peak, rss_kib(self.proc.pid))

    def stop(self):
        if self.proc:
            self.sample_rss()
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None


def registry_cmd(proxy_of=None, access_log=False):
    """A docker-registry (a proxy of `proxy_of` if given); with `access_log`, its log has a line per
    request, to count what reached it."""
    def make(state, port):
        config = os.path.join(state, "config.yml")
        proxy = f"proxy:\n  remoteurl: {proxy_of}\n" if proxy_of else ""
        accesslog = "" if access_log else "  accesslog:\n    disabled: true\n"
        with open(config, "w") as f:
            f.write(
                f"version: 0.1\nlog:\n  level: error\n{accesslog}"
                f"storage:\n  filesystem:\n    rootdirectory: {state}/data\n"
                f"http:\n  addr: 127.0.0.1:{port}\n{proxy}"
            )
        return ["docker-registry", "serve", config]

    return make


def wharf_cmd(binary, upstream, tls=None):
    """wharf in front of `upstream`; with `tls` = (cert, key), it speaks HTTPS (h2 and http/1.1 by ALPN)."""
    def make(state, port):
        config = os.path.join(state, "wharf.toml")
        tls_keys = f'tls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"\n' if tls else ""
        with open(config, "w") as f:
            f.write(
                f'[server]\nlisten = "127.0.0.1:{port}"\n{tls_keys}[storage]\npath = "{state}/data"\n'
                f'[[upstream]]\nname = "bench.test"\nurl = "{upstream}"\ndefault = true\ninsecure = true\n'
            )
        return [binary, "serve", "--config", config]

    return make


def nginx_cmd(upstream, tls=None):
    """nginx as a proxy_cache of `upstream`; with `tls` = (port, cert, key), a second server on that
    port with `ssl` and `http2` on, serving the same cache. That one raises `keepalive_requests`
    (default 1000 per connection, HTTP/2 included): h2load does not reconnect after nginx's GOAWAY,
    so with the default each h2load connection would stop after 1000 requests."""
    def make(state, port):
        conf = os.path.join(state, "nginx.conf")
        location = f"""    location / {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache reg;
      proxy_cache_key $request_uri;
      proxy_cache_lock on;
      proxy_cache_valid 200 206 1h;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      proxy_max_temp_file_size 2048m;
      add_header X-Cache $upstream_cache_status;
    }}
"""
        tls_server = f"""  server {{
    listen 127.0.0.1:{tls[0]} ssl http2;
    ssl_certificate {tls[1]};
    ssl_certificate_key {tls[2]};
    keepalive_requests 100000000;
{location}  }}
""" if tls else ""
        with open(conf, "w") as f:
            f.write(f"""
user root;
worker_processes 2;
pid {state}/nginx.pid;
error_log {state}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log {state}/access.log;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {state}/client;
  proxy_temp_path {state}/proxy-tmp;
  fastcgi_temp_path {state}/fastcgi;
  uwsgi_temp_path {state}/uwsgi;
  scgi_temp_path {state}/scgi;
  proxy_cache_path {state}/cache levels=1:2 keys_zone=reg:64m max_size=4g inactive=1h use_temp_path=off;
  server {{
    listen 127.0.0.1:{port};
{location}  }}
{tls_server}}}
""")
        return ["nginx", "-c", conf, "-g", "daemon off;"]

    return make


def put_blob(path, layout):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    os.replace(path, os.path.join(layout, "blobs", "sha256", digest))
    return "sha256:" + digest, os.path.getsize(os.path.join(layout, "blobs", "sha256", digest))


def write_bytes(layout, data):
    tmp = os.path.join(layout, "tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    return put_blob(tmp, layout)


def make_image(layout, layer_sizes, seed):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layers = []
    for i, size in enumerate(layer_sizes):
        tmp = os.path.join(layout, "tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 22)
                f.write(os.urandom(n))
                left -= n
        d, s = put_blob(tmp, layout)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
    cd, cs = write_bytes(layout, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                           "layers": layers}).encode()
    md, ms = write_bytes(layout, manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                       "digest": md, "size": ms,
                                                       "annotations": {"org.opencontainers.image.ref.name": "1"}}]}, f)
    return {"manifest": md, "config": cd, "layers": [l["digest"] for l in layers]}


ACCEPT = ("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def curl_time(url, *options):
    if url.startswith("https:"):
        options = ("-k",) + options
    out = subprocess.run(["curl", "-sf", *options, "-H", ACCEPT, "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def wrk(url, conns):
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{WRK_DURATION}", "--latency", "-H", ACCEPT, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses from {url}")
    return rps, pct(50), pct(99)


# wrk's own report stops at p99: this prints the requests, the duration and p50/p99/p99.9 (in
# microseconds) and the error counts on one line for wrk_tail() to parse.
WRK_TAIL_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("TAIL %d %d %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

WARNINGS = []


def warn(message):
    """Something odd in a row (errors, failed requests): the run goes on and prints it under the table."""
    WARNINGS.append(message)
    print(f"warning: {message}", flush=True)


def wrk_tail(url, conns, script):
    """wrk -t2 -cN (HTTP/1.1; over TLS for an https URL): req/s, p50, p99, p99.9 in ms. The timeout is
    30 s, not wrk's 2 s, so a slow response counts in the tail instead of vanishing as a timeout."""
    proc = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{WRK_DURATION}", "--timeout", "30s", "-s", script,
                           "-H", ACCEPT, url], capture_output=True, text=True, timeout=600)
    m = re.search(r"^TAIL (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        warn(f"wrk -c{conns} {url} failed (exit {proc.returncode}): {proc.stderr.strip()[:200]}")
        return None
    requests, duration_us, p50, p99, p999, *errors = (int(g) for g in m.groups())
    if any(errors):
        warn(f"wrk -c{conns} {url}: {requests} requests; errors connect/read/write/status/timeout = "
             f"{'/'.join(map(str, errors))}")
    if requests == 0 or errors[3]:  # error answers: the numbers measure something else
        return None
    return requests / (duration_us / 1e6), p50 / 1000, p99 / 1000, p999 / 1000


def duration_unit(value, unit):
    return value / 1e6 if unit == "us" else value / 1000 if unit == "ms" else value


def h2load(url, conns=16, *, requests=None):
    """HTTP/2 over TLS with h2load: -cN -m10 for WRK_DURATION (or -n `requests`). Returns
    (req/s, mean ms per request, seconds for the whole run); None if it failed."""
    amount = ["-n", str(requests)] if requests else ["-D", WRK_DURATION]
    proc = subprocess.run(["h2load", *amount, f"-c{conns}", f"-m{H2_STREAMS}", f"-t{min(2, conns)}", "-H", ACCEPT, url],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    finished = re.search(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out, re.M)
    counts = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out, re.M)
    statuses = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out, re.M)
    if proc.returncode != 0 or not (finished and counts and statuses and mean):
        warn(f"h2load -c{conns} {url} failed (exit {proc.returncode}): {(proc.stderr or out).strip()[-200:]}")
        return None
    done, succeeded = int(counts.group(3)), int(counts.group(4))
    bad = int(statuses.group(3)) + int(statuses.group(4))
    if succeeded == 0 or succeeded < done or bad or int(counts.group(5)) or int(counts.group(6)):
        warn(f"h2load -c{conns} {url}: {counts.group(0)}; {statuses.group(0)}")
        if succeeded == 0:
            return None
    seconds = duration_unit(float(finished.group(1)), finished.group(2))
    return float(finished.group(3)), duration_unit(float(mean.group(1)), mean.group(2)) * 1000, seconds


def concurrent_pulls(server, url, size):
    """PULLS curl clients pull `url` at once. Returns aggregate GB/s (all bytes over the wall time from
    the first start to the last byte), the slowest and the median client's seconds, and the server's
    peak RSS in KiB during the pulls."""
    if not reset_peak_rss(server.proc.pid):  # no clear_refs: a fresh process, same cache
        server.stop()
        server.start(fresh=False)
    start = time.monotonic()
    clients = [subprocess.Popen(["curl", "-sf", "-k", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url],
                                stdout=subprocess.PIPE, text=True) for _ in range(PULLS)]
    peak = 0
    deadline = start + 600
    while any(c.poll() is None for c in clients) and time.monotonic() < deadline:
        peak = max(peak, rss_kib(server.proc.pid))
        time.sleep(0.05)
    wall = time.monotonic() - start
    peak = max(peak, rss_kib(server.proc.pid))
    times = []
    for c in clients:
        if c.poll() is None:
            c.kill()
        out = c.communicate()[0].split()
        if c.returncode != 0 or len(out) != 2 or int(out[1]) != size:
            warn(f"{server.name}: a client of {PULLS} concurrent pulls failed (curl exit {c.returncode}, {out})")
            return None
        times.append(float(out[0]))
    return PULLS * size / wall / 1e9, max(times), median(times), peak


def median(values):
    return statistics.median(values)


SERVERS = []


def main():
    try:
        run()
    finally:
        for s in SERVERS:  # never leave a server behind, whatever failed
            try:
                s.stop()
            except Exception:
                pass


def run():
    binary = os.path.abspath(sys.argv[1])
    # An optional second wharf binary (an older build) gets a column of its own, for before/after.
    baseline = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
    work = tempfile.mkdtemp(prefix="wharf-compare-")
    home = os.path.join(work, "home")
    os.makedirs(home)
    print(f"work directory: {work}", flush=True)

    upstream = Server("upstream", work, registry_cmd())
    upstream.start(fresh=True)
    print("generating and pushing images (512 MiB layer, 50 small layers, small image, 1.6 MiB layer)...", flush=True)
    images = {
        "big": make_image(os.path.join(work, "big"), [BIG], 1),
        "fifty": make_image(os.path.join(work, "fifty"), [4096 + 997 * i for i in range(50)], 2),
        "small": make_image(os.path.join(work, "small"), [1024], 3),
        "mid": make_image(os.path.join(work, "mid"), [MID], 4),
    }
    for name in images:
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci:{work}/{name}:1", f"docker://127.0.0.1:{upstream.port}/bench/{name}:1"],
                       check=True, env={**os.environ, "HOME": home})
        shutil.rmtree(os.path.join(work, name))

    cert, key = make_cert(work)
    nginx_tls_port = free_port()
    servers = [
        Server("wharf", work, wharf_cmd(binary, upstream.url)),
        Server("registry-proxy", work, registry_cmd(upstream.url)),
        Server("nginx", work, nginx_cmd(upstream.url, (nginx_tls_port, cert, key)), tls_port=nginx_tls_port),
    ]
    if baseline:
        servers.append(Server("wharf-before", work, wharf_cmd(baseline, upstream.url)))
    big_path = f"/v2/bench/big/blobs/{images['big']['layers'][0]}"
    small_blob = f"/v2/bench/small/blobs/{images['small']['config']}"
    manifest = "/v2/bench/small/manifests/1"
    results = {s.name: {} for s in servers}
    results["direct"] = {}
    paths = {"big": big_path, "small": small_blob, "manifest": manifest,
             "mid": f"/v2/bench/mid/blobs/{images['mid']['layers'][0]}"}
    if ROWS != "prod":
        base_rows(servers, upstream, paths, results, work, home, baseline)
    if ROWS != "base":
        # wharf over HTTPS: a second process with its own cache (wharf has one listener).
        wharf_tls = Server("wharf-tls", work, wharf_cmd(binary, upstream.url, (cert, key)), https=True)
        prod_rows(servers[0], wharf_tls, servers[2], upstream, paths, results, work)
    upstream.stop()

    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


def base_rows(servers, upstream, paths, results, work, home, baseline):
    """The first table: wharf, the distribution proxy and nginx, plain HTTP/1.1."""
    big_path, small_blob, manifest = paths["big"], paths["small"], paths["manifest"]
    print("cold pulls of the 512 MiB layer...", flush=True)
    results["direct"]["cold"] = median([curl_time(upstream.url + big_path)[0] for _ in range(REPS)])
    for s in servers:
        times = []
        for _ in range(REPS):
            s.start(fresh=True)
            times.append(curl_time(s.url + big_path)[0])
            s.sample_rss()
            s.stop()
        results[s.name]["cold"] = median(times)

    for s in servers:
        print(f"warm runs against {s.name}...", flush=True)
        s.start(fresh=True)
        curl_time(s.url + big_path)  # fill
        for path in (small_blob, manifest):
            curl_time(s.url + path)
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                        f"docker://127.0.0.1:{s.port}/bench/fifty:1", f"dir:{work}/fifty-warmup"],
                       check=True, env={**os.environ, "HOME": home})
        shutil.rmtree(f"{work}/fifty-warmup")
        gbps = []
        for _ in range(REPS):
            t, n = curl_time(s.url + big_path)
            gbps.append(n / t / 1e9)
        results[s.name]["big GB/s"] = median(gbps)
        s.sample_rss()
        for label, path in (("small blob", small_blob), ("manifest", manifest)):
            for c in CONCURRENCY:
                runs = [wrk(s.url + path, c) for _ in range(REPS)]
                s.sample_rss()
                results[s.name][f"{label} c{c} req/s"] = median([r[0] for r in runs])
                results[s.name][f"{label} c{c} p50 ms"] = median([r[1] for r in runs])
                results[s.name][f"{label} c{c} p99 ms"] = median([r[2] for r in runs])
        walls = []
        for i in range(REPS):
            out = f"{work}/fifty-{i}"
            start = time.monotonic()
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                            f"docker://127.0.0.1:{s.port}/bench/fifty:1", f"dir:{out}"],
                           check=True, env={**os.environ, "HOME": home})
            walls.append(time.monotonic() - start)
            shutil.rmtree(out)
        results[s.name]["skopeo 50 layers s"] = median(walls)
        s.stop()
        results[s.name]["peak RSS MiB"] = s.peak / 1024

    # wharf's memory while 64 clients pull the big layer from a warm cache, in a fresh process.
    w = servers[0]
    w.peak = 0
    w.start(fresh=False)
    clients = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", w.url + big_path]) for _ in range(64)]
    while any(c.poll() is None for c in clients):
        w.sample_rss()
        time.sleep(0.05)
    w.stop()
    results["wharf"]["RSS 64 big pulls MiB"] = w.peak / 1024

    rows = ["cold", "big GB/s"]
    for label in ("small blob", "manifest"):
        for c in CONCURRENCY:
            rows += [f"{label} c{c} req/s", f"{label} c{c} p50 ms", f"{label} c{c} p99 ms"]
    rows += ["skopeo 50 layers s", "peak RSS MiB", "RSS 64 big pulls MiB"]
    print()
    print(f"wharf vs distribution proxy vs nginx cache; median of {REPS}; {os.cpu_count()} cores "
          f"({cpu_model()}); shared, noisy machine: compare within this run only.")
    print(f"cold = seconds to pull the 512 MiB layer with an empty cache (direct from upstream: "
          f"{results['direct']['cold']:.3f} s)")
    header = f"{'metric':<26}{'wharf':>11}{'reg-proxy':>11}{'nginx':>11}{'w/proxy':>9}{'w/nginx':>9}"
    if baseline:
        header += f"{'before':>11}{'w/before':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        w = results["wharf"].get(row)
        p = results["registry-proxy"].get(row)
        n = results["nginx"].get(row)
        fmt = lambda v: f"{v:>11.3f}" if isinstance(v, float) and v < 100 else (f"{v:>11.0f}" if v is not None else f"{'-':>11}")
        ratio = lambda a, b: f"{a / b:>9.2f}" if a is not None and b else f"{'-':>9}"
        line = f"{row:<26}{fmt(w)}{fmt(p)}{fmt(n)}{ratio(w, p)}{ratio(w, n)}"
        if baseline:
            b = results["wharf-before"].get(row)
            line += f"{fmt(b)}{ratio(w, b)}"
        print(line)
    print(f"{'cold / direct':<26}{results['wharf']['cold'] / results['direct']['cold']:>11.2f}"
          f"{results['registry-proxy']['cold'] / results['direct']['cold']:>11.2f}"
          f"{results['nginx']['cold'] / results['direct']['cold']:>11.2f}")


def make_cert(work):
    """A self-signed ECDSA P-256 certificate for 127.0.0.1, served by both wharf and nginx."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def prod_rows(wharf, wharf_tls, nginx, upstream, paths, results, work):
    """The production table: wharf against nginx, interleaved rep by rep, HTTPS and HTTP/2 included."""
    names = ("wharf", "nginx")
    plain = {"wharf": wharf, "nginx": nginx}
    tls = {"wharf": wharf_tls, "nginx": nginx}
    prod = results["prod"] = {name: {} for name in names}
    order = []  # (row, better), in print order
    script = os.path.join(work, "tail.lua")
    with open(script, "w") as f:
        f.write(WRK_TAIL_LUA)

    def record(row, better, per_server):
        """per_server: name -> list of values (None for a failed run); the row is their median."""
        order.append((row, better))
        for name, values in per_server.items():
            values = [v for v in values if v is not None]
            prod[name][row] = median(values) if values else None

    def reps(measure):
        """measure(name) REPS times per server, the servers interleaved run by run."""
        got = {name: [] for name in names}
        for _ in range(REPS):
            for name in names:
                got[name].append(measure(name))
        return got

    def column(got, i):
        return {name: [None if r is None else r[i] for r in runs] for name, runs in got.items()}

    # A cold pull of the big blob, fresh cache each time, against a direct pull; reused from the first
    # table when it ran.
    if all("cold" in results[name] for name in names):
        cold = {name: [results[name]["cold"]] for name in names}
        direct = results["direct"]["cold"]
    else:
        print("cold pulls of the 512 MiB layer (wharf, nginx, direct)...", flush=True)
        cold = {name: [] for name in names}
        directs = []
        for _ in range(REPS):
            directs.append(curl_time(upstream.url + paths["big"])[0])
            for name in names:
                plain[name].start(fresh=True)
                cold[name].append(curl_time(plain[name].url + paths["big"])[0])
                plain[name].stop()
        direct = results["direct"]["cold"] = median(directs)

    print(f"filling wharf ({wharf.url}), wharf over HTTPS ({wharf_tls.url}) and nginx ({nginx.url}, "
          f"{nginx.tls_url})...", flush=True)
    for s in (wharf, wharf_tls, nginx):
        s.start(fresh=True)
        for path in ("big", "mid", "small", "manifest"):
            curl_time(s.url + paths[path])

    print("HTTPS with HTTP/1.1 (wrk) and HTTP/2 (h2load)...", flush=True)
    for label, path in (("small blob", "small"), ("manifest", "manifest")):
        got = reps(lambda name: wrk_tail(tls[name].tls_url + paths[path], 16, script))
        record(f"https/1.1 {label} c16 req/s", "higher", column(got, 0))
    tail = {}  # (scheme, conns) -> wrk_tail results per server; the https c16 req/s is also an HTTPS/1.1 row
    for scheme in ("https", "http"):
        for c in CONCURRENCY:
            tail[scheme, c] = reps(lambda name: wrk_tail(
                (tls[name].tls_url if scheme == "https" else plain[name].url) + paths["mid"], c, script))
    record("https/1.1 1.6MiB blob c16 req/s", "higher", column(tail["https", 16], 0))
    got = reps(lambda name: curl_time(tls[name].tls_url + paths["big"], "--http1.1"))
    record("https/1.1 big blob GB/s", "higher", {name: [n / t / 1e9 for t, n in runs] for name, runs in got.items()})
    for label, path in (("small blob", "small"), ("manifest", "manifest"), ("1.6MiB blob", "mid")):
        got = reps(lambda name: h2load(tls[name].tls_url + paths[path]))
        record(f"h2 {label} c16 m{H2_STREAMS} req/s", "higher", column(got, 0))
        record(f"h2 {label} c16 m{H2_STREAMS} mean ms", "lower", column(got, 1))
    got = reps(lambda name: h2load(tls[name].tls_url + paths["big"], 1, requests=1))
    record("h2 big blob GB/s", "higher",
           {name: [None if r is None else BIG / r[2] / 1e9 for r in runs] for name, runs in got.items()})

    for scheme in ("http", "https"):
        for c in CONCURRENCY:
            got = tail[scheme, c]
            record(f"{scheme}/1.1 1.6MiB c{c} req/s", "higher", column(got, 0))
            record(f"{scheme}/1.1 1.6MiB c{c} p50 ms", "lower", column(got, 1))
            record(f"{scheme}/1.1 1.6MiB c{c} p99 ms", "lower", column(got, 2))
            record(f"{scheme}/1.1 1.6MiB c{c} p99.9 ms", "lower", column(got, 3))

    print(f"{PULLS} concurrent pulls of the 512 MiB layer from cache...", flush=True)
    got = reps(lambda name: concurrent_pulls(plain[name], plain[name].url + paths["big"], BIG))
    record(f"{PULLS} big pulls GB/s", "higher", column(got, 0))
    record(f"{PULLS} big pulls slowest s", "lower", column(got, 1))
    record(f"{PULLS} big pulls median s", "lower", column(got, 2))
    order.append((f"{PULLS} big pulls peak RSS MiB", "lower"))  # the highest of the runs, not the median
    for name in names:
        peaks = [r[3] / 1024 for r in got[name] if r is not None]
        prod[name][f"{PULLS} big pulls peak RSS MiB"] = max(peaks) if peaks else None

    record("cold big blob s", "lower", cold)
    order.append(("cold / direct", "lower"))
    for name in names:
        prod[name]["cold / direct"] = prod[name]["cold big blob s"] / direct
    for s in (wharf, wharf_tls, nginx):
        s.stop()

    print()
    print(f"production rows: wharf vs nginx cache; median of {REPS}; {os.cpu_count()} cores ({cpu_model()}); "
          f"shared, noisy machine: compare within this run only.")
    print(f"https/1.1 = wrk -t2 over TLS; h2 = h2load -t2 -c16 -m{H2_STREAMS} over TLS (ALPN h2); big blob over "
          f"TLS = one stream (curl --http1.1, h2load -n1 -c1); both servers on one self-signed P-256 certificate.")
    print(f"{PULLS} big pulls = {PULLS} curl clients at once over plain HTTP; peak RSS is the highest VmHWM of "
          f"the server's processes over the runs. cold = s to pull the 512 MiB layer with an empty cache "
          f"(direct from upstream: {direct:.3f} s).")
    print("w/nginx = wharf / nginx; 'better' says which way: for 'lower' rows a ratio under 1 means wharf leads.")
    header = f"{'metric':<34}{'wharf':>11}{'nginx':>11}{'w/nginx':>9}  better"
    print(header)
    print("-" * len(header))
    for row, better in order:
        w, n = prod["wharf"].get(row), prod["nginx"].get(row)
        fmt = lambda v: f"{v:>11.3f}" if isinstance(v, float) and v < 100 else (f"{v:>11.0f}" if v is not None else f"{'-':>11}")
        ratio = f"{w / n:>9.2f}" if w is not None and n else f"{'-':>9}"
        print(f"{row:<34}{fmt(w)}{fmt(n)}{ratio}  {better}")
    for message in WARNINGS:
        print(f"warning: {message}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            return m.group(1).strip() if m else "unknown CPU"
    except OSError:
        return "unknown CPU"


if __name__ == "__main__":
    main()
