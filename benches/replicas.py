#!/usr/bin/env python3
"""wharf replicas on a shared object store: one run, one table.

On loopback: a docker-registry upstream seeded with a 256 MiB layer and an image of 50 small layers,
one Garage node (an S3-compatible object store), and wharf processes on the same bucket. Each round
uses a fresh key prefix, so the object store starts empty. Measured, median of REPS (default 3):

- a hit of the 256 MiB layer from the hot tier (local disk) vs from the object store (a replica
  with an empty hot tier): time to first byte and throughput; the same for a 1 KiB blob;
- a cold pull (empty object store) through one replica alone vs through one replica of three
  (rendezvous owners: blobs this replica does not own come through their owner);
- upstream GETs per blob when N clients spread over 3 replicas ask for the cold 256 MiB layer;
- what a pull costs the object store: its requests by kind (Garage's own counters) and bytes.

The machine is shared and noisy, and everything shares its 2 cores: compare within one run.
"""
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import (ACCEPT, SERVERS, Server, free_port, make_image, median, registry_cmd,
                     wait_http)  # noqa: E402

REPS = int(os.environ.get("REPS", "3"))
HERD = int(os.environ.get("HERD", "30"))
BIG = 256 * 1024 * 1024


def blob_gets(upstream, digest):
    """GETs of the blob in the upstream's access log."""
    with open(os.path.join(upstream.work, f"{upstream.name}.log"), errors="replace") as f:
        return sum(1 for line in f if f'"GET /v2/bench/big/blobs/{digest}' in line)


class Garage:
    """One Garage node with a bucket and a key."""

    def __init__(self, work):
        self.dir = os.path.join(work, "garage")
        os.makedirs(self.dir)
        self.s3_port, self.admin_port, rpc = free_port(), free_port(), free_port()
        self.config = os.path.join(self.dir, "garage.toml")
        with open(self.config, "w") as f:
            f.write(f'metadata_dir = "{self.dir}/meta"\ndata_dir = "{self.dir}/data"\n'
                    f'db_engine = "sqlite"\nreplication_factor = 1\n'
                    f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
                    f'rpc_secret = "{secrets.token_hex(32)}"\n'
                    f'[s3_api]\ns3_region = "garage"\napi_bind_addr = "127.0.0.1:{self.s3_port}"\n'
                    f'[admin]\napi_bind_addr = "127.0.0.1:{self.admin_port}"\n')
        log = open(os.path.join(self.dir, "garage.log"), "ab")
        self.proc = subprocess.Popen(["garage", "-c", self.config, "server"], stdout=log, stderr=log,
                                     start_new_session=True)
        node = self.cli_retry("node", "id", "-q").split("@")[0]
        self.cli("layout", "assign", "-z", "dc1", "-c", "10G", node)
        self.cli("layout", "apply", "--version", "1")
        self.cli_retry("bucket", "create", "wharf")
        self.key_id, self.secret = "GK" + secrets.token_hex(12), secrets.token_hex(32)
        self.cli("key", "import", "--yes", "-n", "wharf", self.key_id, self.secret)
        self.cli("bucket", "allow", "--read", "--write", "--owner", "wharf", "--key", "wharf")
        for name, value in (("key-id", self.key_id), ("secret", self.secret)):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(value + "\n")
        wait_http(f"http://127.0.0.1:{self.s3_port}/")

    def cli(self, *args):
        return subprocess.run(["garage", "-c", self.config, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    def cli_retry(self, *args):
        deadline = time.time() + 30
        while True:
            try:
                return self.cli(*args)
            except subprocess.CalledProcessError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)

    def s3_toml(self, prefix):
        return (f'[storage.s3]\nbucket = "wharf"\nprefix = "{prefix}"\n'
                f'endpoint = "http://127.0.0.1:{self.s3_port}"\nregion = "garage"\npath_style = true\n'
                f'access_key_id_file = "{self.dir}/key-id"\nsecret_access_key_file = "{self.dir}/secret"\n')

    def settle(self, quiet=1.0, limit=120):
        """Waits until the store has had no request for `quiet` seconds (background uploads done)."""
        deadline = time.time() + limit
        last = self.requests()
        while time.time() < deadline:
            time.sleep(quiet)
            now = self.requests()
            if now == last:
                return
            last = now
        raise RuntimeError("the object store did not settle")

    def requests(self):
        """Garage's S3 request counters by endpoint (GetObject, PutObject, ...)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics").read().decode()
        counts = {}
        for m in re.finditer(r'^api_s3_request_counter\{api_endpoint="(\w+)"\}\s+(\d+)', text, re.M):
            counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
        return counts

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def wharf_replica(binary, upstream, garage, prefix, peers, own, secret_file):
    def make(state, port):
        config = os.path.join(state, "wharf.toml")
        cluster = ""
        if peers:
            listed = ", ".join(f'"{p}"' for p in peers)
            cluster = f'[cluster]\npeers = [{listed}]\nself = "{own}"\nsecret_file = "{secret_file}"\n'
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{port}"\n'
                    f'[storage]\npath = "{state}/data"\nbackend = "s3"\n{garage.s3_toml(prefix)}'
                    f'{cluster}'
                    f'[[upstream]]\nname = "bench.test"\nurl = "{upstream}"\ndefault = true\ninsecure = true\n')
        return [binary, "serve", "--config", config]
    return make


def curl(url):
    """(time to first byte, total time, bytes) of one GET."""
    out = subprocess.run(["curl", "-sf", "-H", ACCEPT, "-o", "/dev/null", "-w",
                          "%{time_starttransfer} %{time_total} %{size_download}", url],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def replicas(binary, work, upstream, garage, n, prefix, secret_file):
    """n wharf replicas on `prefix`, in a cluster when n > 1; started."""
    ports = [free_port() for _ in range(n)]
    peers = [f"http://127.0.0.1:{p}" for p in ports] if n > 1 else []
    out = []
    for i, port in enumerate(ports):
        own = f"http://127.0.0.1:{port}"
        s = Server(f"{prefix.strip('/')}-r{i}", work,
                   wharf_replica(binary, upstream.url, garage, prefix, peers, own, secret_file))
        s.port = port
        s.start(fresh=True)
        out.append(s)
    return out


def skopeo_pull(server, work, home):
    out = f"{work}/pull-{secrets.token_hex(4)}"
    start = time.monotonic()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://127.0.0.1:{server.port}/bench/fifty:1", f"dir:{out}"],
                   check=True, env={**os.environ, "HOME": home})
    took = time.monotonic() - start
    shutil.rmtree(out)
    return took


def main():
    try:
        run()
    finally:
        for s in SERVERS:
            try:
                s.stop()
            except Exception:
                pass


def run():
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="wharf-replicas-")
    home = os.path.join(work, "home")
    os.makedirs(home)
    print(f"work directory: {work}", flush=True)
    secret_file = os.path.join(work, "cluster.secret")
    with open(secret_file, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    garage = Garage(work)
    upstream = Server("upstream", work, registry_cmd(access_log=True))
    upstream.start(fresh=True)
    print("generating and pushing images (256 MiB layer, 50 small layers)...", flush=True)
    images = {
        "big": make_image(os.path.join(work, "big"), [BIG], 1),
        "fifty": make_image(os.path.join(work, "fifty"), [4096 + 997 * i for i in range(50)], 2),
    }
    for name in images:
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci:{work}/{name}:1", f"docker://127.0.0.1:{upstream.port}/bench/{name}:1"],
                       check=True, env={**os.environ, "HOME": home})
        shutil.rmtree(os.path.join(work, name))
    big = images["big"]["layers"][0]
    big_path = f"/v2/bench/big/blobs/{big}"
    small_path = f"/v2/bench/big/blobs/{images['big']['config']}"
    rows = {}
    round_no = [0]

    def fresh_prefix():
        round_no[0] += 1
        return f"round{round_no[0]}/"

    # Hits: the hot tier vs the object store.
    print("hits from the hot tier and from the object store...", flush=True)
    obj_ttfb, obj_gbps, hot_ttfb, hot_gbps, small_obj, small_hot = [], [], [], [], [], []
    cost_fill, cost_obj_hit = {}, {}
    for _ in range(REPS):
        prefix = fresh_prefix()
        [filler] = replicas(binary, work, upstream, garage, 1, prefix, secret_file)
        before = garage.requests()
        curl(filler.url + big_path)
        curl(filler.url + small_path)
        garage.settle()  # wharf uploads to the object store in the background after the commit
        cost_fill = diff(garage.requests(), before)
        filler.stop()
        [reader] = replicas(binary, work, upstream, garage, 1, prefix, secret_file)
        before = garage.requests()
        t0, t, n = curl(reader.url + big_path)
        s0, _, _ = curl(reader.url + small_path)
        cost_obj_hit = diff(garage.requests(), before)
        obj_ttfb.append(t0 * 1000)
        obj_gbps.append(n / t / 1e9)
        small_obj.append(s0 * 1000)
        time.sleep(1)
        t0, t, n = curl(reader.url + big_path)
        s0, _, _ = curl(reader.url + small_path)
        hot_ttfb.append(t0 * 1000)
        hot_gbps.append(n / t / 1e9)
        small_hot.append(s0 * 1000)
        reader.stop()
    rows["256 MiB TTFB ms"] = (median(hot_ttfb), median(obj_ttfb))
    rows["256 MiB GB/s"] = (median(hot_gbps), median(obj_gbps))
    rows["1 KiB TTFB ms"] = (median(small_hot), median(small_obj))

    # Cold pulls: one replica alone vs one of three.
    print("cold pulls through one replica and through one of three...", flush=True)
    cold = {1: {"big": [], "fifty": []}, 3: {"big": [], "fifty": []}}
    for _ in range(REPS):
        for n in (1, 3):
            group = replicas(binary, work, upstream, garage, n, fresh_prefix(), secret_file)
            cold[n]["big"].append(curl(group[0].url + big_path)[1])
            cold[n]["fifty"].append(skopeo_pull(group[0], work, home))
            for s in group:
                s.stop()

    # The herd: N clients over 3 replicas, one cold blob.
    print(f"a herd of {HERD} clients over 3 replicas...", flush=True)
    herd_gets, herd_walls = [], []
    for _ in range(REPS):
        group = replicas(binary, work, upstream, garage, 3, fresh_prefix(), secret_file)
        before = blob_gets(upstream, big)
        start = time.monotonic()
        procs = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", group[i % 3].url + big_path])
                 for i in range(HERD)]
        codes = [p.wait() for p in procs]
        herd_walls.append(time.monotonic() - start)
        if any(codes):
            raise SystemExit(f"herd: curl exit codes {codes}")
        time.sleep(0.5)
        herd_gets.append(blob_gets(upstream, big) - before)
        for s in group:
            s.stop()
    upstream.stop()
    garage.stop()

    print()
    print(f"wharf replicas on one Garage node; median of {REPS}; {os.cpu_count()} cores; "
          f"shared, noisy machine: compare within this run only.")
    print(f"{'hit':<22}{'hot tier':>12}{'object store':>14}")
    print("-" * 48)
    for label, (hot, obj) in rows.items():
        print(f"{label:<22}{hot:>12.3f}{obj:>14.3f}")
    print()
    print(f"{'cold pull, seconds':<30}{'1 replica':>12}{'1 of 3':>10}")
    print("-" * 52)
    for what, label in (("big", "256 MiB layer (curl)"), ("fifty", "50-layer image (skopeo)")):
        print(f"{label:<30}{median(cold[1][what]):>12.3f}{median(cold[3][what]):>10.3f}")
    print()
    print(f"herd: {HERD} clients over 3 replicas, one cold 256 MiB blob: upstream GETs per run "
          f"{herd_gets}, wall {median(herd_walls):.2f} s (median)")
    print()
    print("object store requests for one 256 MiB layer + one 1 KiB blob:")
    print(f"  filled from the upstream: {fmt_counts(cost_fill)}")
    print(f"  first read on a replica with an empty hot tier: {fmt_counts(cost_obj_hit)}")
    print("  a hot-tier hit: none")
    shutil.rmtree(work, ignore_errors=True)


def diff(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def fmt_counts(counts):
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


if __name__ == "__main__":
    main()
