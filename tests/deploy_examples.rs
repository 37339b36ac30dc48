//! The container image's and the Kubernetes example's files, kept honest without a cluster: the
//! configurations they ship pass `wharf check-config` (the real binary), and everything that has
//! to agree with them does: the ports the image exposes and the pod declares, the probes' paths
//! and ports, the mounts, the user, the shutdown grace, and the size budget against the volume.
//! The YAML is read with a YAML parser (yaml-rust2), so a manifest that is not valid YAML fails.
//! `tests/e2e_image.rs` builds and runs the image itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// The uid and gid the image runs as (the Containerfile's `USER`).
const UID: i64 = 65532;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The one YAML document in `contrib/kubernetes/<file>`.
fn manifest(file: &str) -> Yaml {
    let path = root().join("contrib/kubernetes").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{file}: one document");
    docs.remove(0)
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, found {y:?}"))
}

fn int_of(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what}: an integer expected, found {y:?}"))
}

fn list_of<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: a list expected, found {y:?}"))
}

/// Runs `wharf check-config` on `text` (written to a temporary file) and loads it as `wharf
/// serve` would.
fn checked(text: &str, what: &str) -> wharf::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} fails wharf check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok\n", path.display())
    );
    wharf::Config::load(&path).unwrap()
}

/// A Kubernetes quantity of bytes ("50Gi", "500M", "1073741824").
fn quantity(q: &str) -> u64 {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    q.parse().unwrap()
}

/// The metrics listener of `config`, which must listen on every interface: on loopback neither
/// the kubelet's probes, nor Prometheus, nor anything outside the container could reach it.
fn metrics_listen(config: &wharf::Config, what: &str) -> SocketAddr {
    let listen = config
        .metrics
        .listen
        .unwrap_or_else(|| panic!("{what}: [metrics] listen must be on"));
    assert!(
        listen.ip().is_unspecified(),
        "{what}: metrics listen {listen} is unreachable from outside the container"
    );
    assert!(
        config.server.listen.ip().is_unspecified(),
        "{what}: server listen {} is unreachable from outside the container",
        config.server.listen
    );
    listen
}

#[test]
fn the_kubernetes_example_is_consistent_and_its_config_valid() {
    let configmap = manifest("configmap.yaml");
    let deployment = manifest("deployment.yaml");
    let service = manifest("service.yaml");
    let pvc = manifest("pvc.yaml");
    let kustomization = manifest("kustomization.yaml");
    assert_eq!(str_of(&configmap["kind"], "kind"), "ConfigMap");
    assert_eq!(str_of(&deployment["kind"], "kind"), "Deployment");
    assert_eq!(str_of(&service["kind"], "kind"), "Service");
    assert_eq!(str_of(&pvc["kind"], "kind"), "PersistentVolumeClaim");
    let resources: Vec<&str> = list_of(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(root().join("contrib/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    let mut listed: Vec<String> = resources.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");

    // The configuration.
    let config = checked(
        str_of(&configmap["data"]["config.toml"], "data.config.toml"),
        "configmap.yaml's config.toml",
    );
    let metrics = metrics_listen(&config, "configmap.yaml");

    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let containers = list_of(&spec["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let wharf = &containers[0];

    // Ports by name, as the probes and the Service name them.
    let ports: Vec<(&str, i64)> = list_of(&wharf["ports"], "ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name"),
                int_of(&p["containerPort"], "containerPort"),
            )
        })
        .collect();
    let port = |p: &Yaml| -> i64 {
        match p {
            Yaml::Integer(n) => *n,
            Yaml::String(name) => {
                ports
                    .iter()
                    .find(|(n, _)| n == name)
                    .unwrap_or_else(|| panic!("no container port named {name}: {ports:?}"))
                    .1
            }
            other => panic!("a port is a number or a name: {other:?}"),
        }
    };
    assert!(
        ports.contains(&("registry", i64::from(config.server.listen.port()))),
        "the pod declares [server] listen's port: {ports:?}"
    );
    assert!(
        ports.contains(&("metrics", i64::from(metrics.port()))),
        "the pod declares [metrics] listen's port: {ports:?}"
    );

    // The probes ask the metrics listener: readiness /readyz, liveness and startup /healthz.
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &wharf[probe]["httpGet"];
        assert_eq!(str_of(&get["path"], probe), path, "{probe}");
        assert_eq!(
            port(&get["port"]),
            i64::from(metrics.port()),
            "{probe} asks the metrics listener"
        );
    }

    // The Service reaches both listeners and selects the pod.
    let service_ports: Vec<(i64, i64)> = list_of(&service["spec"]["ports"], "service ports")
        .iter()
        .map(|p| (int_of(&p["port"], "port"), port(&p["targetPort"])))
        .collect();
    for listen in [config.server.listen.port(), metrics.port()] {
        assert!(
            service_ports.contains(&(i64::from(listen), i64::from(listen))),
            "the Service forwards {listen}: {service_ports:?}"
        );
    }
    let selector = service["spec"]["selector"].as_hash().unwrap();
    let labels = pod["metadata"]["labels"].as_hash().unwrap();
    for (k, v) in selector {
        assert_eq!(labels.get(k), Some(v), "the pod has the selector's {k:?}");
    }
    assert_eq!(
        &deployment["spec"]["selector"]["matchLabels"],
        &service["spec"]["selector"]
    );

    // The configuration is mounted where --config points, the claim where the storage is.
    let args: Vec<&str> = list_of(&wharf["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| PathBuf::from(w[1]))
        .expect("args pass --config");
    assert_eq!(args[0], "serve");
    let volumes = list_of(&spec["volumes"], "volumes");
    let mounts = list_of(&wharf["volumeMounts"], "volumeMounts");
    let mount_of = |volume: &Yaml| -> PathBuf {
        let name = str_of(&volume["name"], "volume name");
        let mount = mounts
            .iter()
            .find(|m| str_of(&m["name"], "mount name") == name)
            .unwrap_or_else(|| panic!("volume {name} is not mounted"));
        PathBuf::from(str_of(&mount["mountPath"], "mountPath"))
    };
    let config_volume = volumes
        .iter()
        .find(|v| {
            v["configMap"]["name"].as_str()
                == Some(str_of(&configmap["metadata"]["name"], "configmap name"))
        })
        .expect("the ConfigMap is a volume");
    assert_eq!(
        mount_of(config_volume).join("config.toml"),
        config_path,
        "--config is the ConfigMap's config.toml"
    );
    let data_volume = volumes
        .iter()
        .find(|v| {
            v["persistentVolumeClaim"]["claimName"].as_str()
                == Some(str_of(&pvc["metadata"]["name"], "pvc name"))
        })
        .expect("the claim is a volume");
    assert_eq!(
        mount_of(data_volume),
        config.storage.path,
        "the claim is mounted at [storage] path"
    );

    // The grace period covers wharf's own.
    let grace = int_of(
        &spec["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        u64::try_from(grace).unwrap() > config.server.shutdown_grace.as_secs(),
        "terminationGracePeriodSeconds {grace} must be above shutdown_grace {:?}",
        config.server.shutdown_grace
    );

    // The image's user, and no write outside the volume.
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        int_of(&spec["securityContext"]["runAsUser"], "runAsUser"),
        UID
    );
    assert_eq!(
        int_of(&spec["securityContext"]["fsGroup"], "fsGroup"),
        UID,
        "the volume is writable by the image's user"
    );
    let sc = &wharf["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(
        !wharf["resources"]["limits"]["memory"].is_badvalue(),
        "a memory limit"
    );

    // The budget, with the free-space floor, fits the claim.
    let claim = quantity(str_of(
        &pvc["spec"]["resources"]["requests"]["storage"],
        "storage request",
    ));
    let budget = config
        .storage
        .max_size
        .expect("the example sets [storage] max_size");
    assert!(
        budget + config.storage.min_free <= claim,
        "max_size {budget} + min_free {} must fit the claim of {claim} bytes",
        config.storage.min_free
    );
}

/// The instructions of the Containerfile: (keyword, arguments), continuation lines joined,
/// comments dropped.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((keyword.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// The exec-form JSON array `text` ends with (`CMD ["a", "b"]`, `HEALTHCHECK ... CMD [...]`).
fn exec_form(text: &str) -> Vec<String> {
    let start = text.find('[').expect("an exec-form array");
    serde_json::from_str(&text[start..]).expect("a JSON array of strings")
}

#[test]
fn the_container_image_is_consistent_and_its_config_valid() {
    let text = std::fs::read_to_string(root().join("contrib/container/config.toml")).unwrap();
    let config = checked(&text, "contrib/container/config.toml");
    let metrics = metrics_listen(&config, "contrib/container/config.toml");
    let all = instructions();
    let of = |keyword: &str| -> Vec<&str> {
        all.iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    };

    assert_eq!(of("FROM"), ["debian:bookworm-slim"]);
    let run = of("RUN").join("\n");
    assert!(
        run.contains("apt-get install -y --no-install-recommends ca-certificates")
            && run.contains("rm -rf /var/lib/apt/lists/*"),
        "CA certificates for upstream TLS, no package lists left: {run}"
    );

    // The configuration is where the commands read it.
    let copies: Vec<(&str, &str)> = of("COPY")
        .into_iter()
        .map(|c| c.split_once(' ').unwrap())
        .collect();
    assert!(copies.contains(&("target/release/wharf", "/usr/local/bin/wharf")));
    let (_, config_in_image) = copies
        .iter()
        .find(|(src, _)| *src == "contrib/container/config.toml")
        .expect("the container config is copied in");
    let [entrypoint] = &of("ENTRYPOINT")[..] else {
        panic!("one ENTRYPOINT")
    };
    let [cmd] = &of("CMD")[..] else {
        panic!("one CMD")
    };
    let mut command = exec_form(entrypoint);
    command.extend(exec_form(cmd));
    assert_eq!(
        command,
        ["wharf", "serve", "--config", config_in_image],
        "the image serves its config"
    );
    let [health] = &of("HEALTHCHECK")[..] else {
        panic!("one HEALTHCHECK")
    };
    assert_eq!(
        exec_form(health),
        ["wharf", "health", "--config", config_in_image],
        "the HEALTHCHECK asks the metrics listener of the config in use"
    );

    // Ports, volume and user.
    let exposed: Vec<u16> = of("EXPOSE")
        .join(" ")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(
        exposed.contains(&config.server.listen.port()),
        "{exposed:?}"
    );
    assert!(exposed.contains(&metrics.port()), "{exposed:?}");
    assert_eq!(
        of("VOLUME"),
        [config.storage.path.to_str().unwrap()],
        "the storage is the volume"
    );
    assert_eq!(of("USER"), [format!("{UID}:{UID}")]);
    assert!(
        run.contains(&format!("install -d -o {UID} -g {UID}"))
            && run.contains(config.storage.path.to_str().unwrap()),
        "the volume's directory belongs to the user: {run}"
    );

    // The build context holds only what is copied.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut want = vec!["*".to_owned()];
    want.extend(copies.iter().map(|(src, _)| format!("!{src}")));
    assert_eq!(
        patterns, want,
        ".dockerignore excludes all but the copied files"
    );
}
