//! What the configuration's unit tests share: password sources from a map, a certificate pair,
//! and the check every refusal must pass (one line, the file, a fix, no secret).

use std::collections::HashMap;
use std::path::Path;

use super::{Config, ConfigError, Sources};

pub(super) struct Fake {
    pub(super) env: HashMap<&'static str, &'static str>,
    pub(super) files: HashMap<&'static str, String>,
}

impl Sources for Fake {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).map(|v| (*v).to_owned())
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path.to_str().unwrap_or(""))
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// A certificate and its key, another key, made once.
pub(super) fn pems() -> &'static (String, String, String) {
    static PEMS: std::sync::OnceLock<(String, String, String)> = std::sync::OnceLock::new();
    PEMS.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["wharf.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        (cert.pem(), key.serialize_pem(), other.serialize_pem())
    })
}

pub(super) fn fake() -> Fake {
    let (cert, key, other_key) = pems();
    let bcrypt = "alice:$2y$05$EZG4xhUA92UnLFhvFGPVr.x8YeYSraDvJIyr7tE7BTMQaf4LP0.gu\n";
    Fake {
        env: HashMap::from([("PW", "env-secret"), ("EMPTY", "")]),
        files: HashMap::from([
            ("/pw", "file-secret\n".into()),
            (
                "/cluster.secret",
                "0123456789abcdef0123456789abcdef\n".into(),
            ),
            ("/crlf", "file-secret\r\n".into()),
            ("/bare", "file-secret".into()),
            ("/two", "file-secret\n\n".into()),
            ("/empty", "\n".into()),
            ("/tls/cert.pem", cert.clone()),
            ("/tls/key.pem", key.clone()),
            ("/tls/other-key.pem", other_key.clone()),
            ("/ca.pem", cert.clone()),
            ("/htpasswd", bcrypt.into()),
            ("/htpasswd-md5", format!("{bcrypt}bob:$apr1$hunter2$xyz\n")),
        ]),
    }
}

pub(super) fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with(text, Path::new("wharf.toml"), &fake())
}

pub(super) const UP: &str =
    "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n";

/// Loads each text and checks that it is refused with a line that contains the wanted text,
/// names the file, is one line, has a fix and leaks no secret.
pub(super) fn assert_refusals(cases: &[(String, &str)]) {
    for (text, want) in cases {
        let got = load(text).map(|_| ()).unwrap_err().to_string();
        assert!(got.starts_with("wharf.toml: "), "{text:?} -> {got}");
        assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
        assert!(!got.contains('\n'), "{got:?} is more than one line");
        assert!(got.contains("; "), "{got:?} has no fix");
        assert!(
            !got.contains("hunter2") && !got.contains("secret"),
            "{got:?} leaks a secret"
        );
    }
}
