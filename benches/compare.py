#!/usr/bin/env python3
"""wharf vs the distribution registry in proxy mode vs an nginx proxy_cache, one run, one table.

Everything runs on loopback: a docker-registry upstream seeded with generated images (one 512 MiB
layer of random bytes, an image of 50 small layers, a small manifest), and the three mirrors in front
of it. Each measurement is repeated REPS times (default 5) and the median is reported. The machine is
shared and noisy, and the load generator shares its 2 cores with the servers: compare within a run.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
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


class Server:
    """A server process with its own state directory; restartable with an empty cache."""

    def __init__(self, name, work, make_cmd):
        self.name, self.work, self.make_cmd = name, work, make_cmd
        self.port = free_port()
        self.proc = None
        self.peak = 0
        SERVERS.append(self)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

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


def wharf_cmd(binary, upstream):
    def make(state, port):
        config = os.path.join(state, "wharf.toml")
        with open(config, "w") as f:
            f.write(
                f'[server]\nlisten = "127.0.0.1:{port}"\n[storage]\npath = "{state}/data"\n'
                f'[[upstream]]\nname = "bench.test"\nurl = "{upstream}"\ndefault = true\ninsecure = true\n'
            )
        return [binary, "serve", "--config", config]

    return make


def nginx_cmd(upstream):
    def make(state, port):
        conf = os.path.join(state, "nginx.conf")
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
    location / {{
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
  }}
}}
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


def curl_time(url):
    out = subprocess.run(["curl", "-sf", "-H", ACCEPT, "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url],
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
    print("generating and pushing images (512 MiB layer, 50 small layers, small image)...", flush=True)
    images = {
        "big": make_image(os.path.join(work, "big"), [BIG], 1),
        "fifty": make_image(os.path.join(work, "fifty"), [4096 + 997 * i for i in range(50)], 2),
        "small": make_image(os.path.join(work, "small"), [1024], 3),
    }
    for name in images:
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci:{work}/{name}:1", f"docker://127.0.0.1:{upstream.port}/bench/{name}:1"],
                       check=True, env={**os.environ, "HOME": home})
        shutil.rmtree(os.path.join(work, name))

    servers = [
        Server("wharf", work, wharf_cmd(binary, upstream.url)),
        Server("registry-proxy", work, registry_cmd(upstream.url)),
        Server("nginx", work, nginx_cmd(upstream.url)),
    ]
    if baseline:
        servers.append(Server("wharf-before", work, wharf_cmd(baseline, upstream.url)))
    big_path = f"/v2/bench/big/blobs/{images['big']['layers'][0]}"
    small_blob = f"/v2/bench/small/blobs/{images['small']['config']}"
    manifest = "/v2/bench/small/manifests/1"
    results = {s.name: {} for s in servers}
    results["direct"] = {}

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
    upstream.stop()

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
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            return m.group(1).strip() if m else "unknown CPU"
    except OSError:
        return "unknown CPU"


if __name__ == "__main__":
    main()
