//! `[[pin]]` and `[[sync]]`: images kept out of eviction, and image lists kept fresh in the
//! background. Every image must name a configured upstream; the references are parsed by
//! [`crate::oci::image_list`], against the upstreams' names.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{io_reason, KeyError};
use super::{default_true, duration, err, Sources, UpstreamConfig};
use crate::oci::{image_list, ImageRef, Platform};

/// One `[[sync]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// The images listed in the entry (`images`), each naming a configured upstream (Docker Hub
    /// short names accepted).
    pub images: Vec<ImageRef>,
    /// A file of more images, one per line with `#` comments (`file`), read again at every run.
    /// It was read and checked when the configuration was loaded.
    pub file: Option<PathBuf>,
    /// How often the entry runs (`interval`, default `6h`, at least `1s`).
    pub interval: Duration,
    /// Only these platforms of a multi-platform image (`platforms`); `None` for all.
    pub platforms: Option<Vec<Platform>>,
    /// Pin the images (`pin`, default true), as `wharf prefetch` does.
    pub pin: bool,
    /// Fetch the images' referrers, signatures, SBOMs and attestations (`referrers`, default true).
    pub referrers: bool,
    /// Only referrers of these artifact types (`referrers_types`); empty for all.
    pub referrers_types: Vec<String>,
}

/// `[import]`: what `wharf import` accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportConfig {
    /// Public keys whose signatures an import accepts (`trusted_keys`); when there are any, an
    /// unsigned, foreign or altered bundle is refused.
    pub trusted_keys: Vec<TrustedKeyFile>,
}

/// A trusted public key, read and checked when the configuration was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeyFile {
    /// The PEM file.
    pub path: PathBuf,
    /// Its 32 Ed25519 public key bytes.
    pub key: [u8; 32],
}

/// `[import]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImport {
    #[serde(default)]
    pub(super) trusted_keys: Vec<PathBuf>,
}

// === impl RawImport ===

impl RawImport {
    /// Reads and checks every trusted key file through `sources`.
    ///
    /// # Errors
    /// The first file that cannot be read or holds no Ed25519 public key.
    pub(super) fn validate(self, sources: &dyn Sources) -> Result<ImportConfig, KeyError> {
        let mut trusted_keys = Vec::with_capacity(self.trusted_keys.len());
        for (i, path) in self.trusted_keys.into_iter().enumerate() {
            let key = format!("import.trusted_keys[{i}]");
            let text = sources.read(&path).map_err(|e| {
                err(
                    &key,
                    format!(
                        "cannot read {} ({}); give the .pub file `wharf keygen --out PREFIX` wrote",
                        path.display(),
                        io_reason(&e)
                    ),
                )
            })?;
            let public = super::pem::ed25519_public_key(text.as_bytes()).map_err(|e| {
                err(
                    &key,
                    format!(
                        "{} {e}; give the .pub file `wharf keygen --out PREFIX` wrote",
                        path.display()
                    ),
                )
            })?;
            trusted_keys.push(TrustedKeyFile { path, key: public });
        }
        Ok(ImportConfig { trusted_keys })
    }
}

/// One `[[pin]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPin {
    pub(super) image: Option<String>,
}

/// One `[[sync]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub(super) images: Option<Vec<String>>,
    pub(super) file: Option<PathBuf>,
    #[serde(default = "default_sync_interval")]
    pub(super) interval: String,
    pub(super) platforms: Option<Vec<String>>,
    #[serde(default = "default_true")]
    pub(super) pin: bool,
    #[serde(default = "default_true")]
    pub(super) referrers: bool,
    #[serde(default)]
    pub(super) referrers_types: Vec<String>,
}

// === impl RawPin ===

/// `[[pin]]`: each image names a configured upstream (`registries`, their names); Docker Hub
/// names get `library/`; duplicates are dropped.
///
/// # Errors
/// The first key refused.
pub(super) fn pins(raw: Vec<RawPin>, registries: &[&str]) -> Result<Vec<ImageRef>, KeyError> {
    let mut pins: Vec<ImageRef> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let image = p.validate(i, registries)?;
        if !pins.contains(&image) {
            pins.push(image);
        }
    }
    Ok(pins)
}

impl RawPin {
    /// Checks `pin[i]`.
    ///
    /// # Errors
    /// The key refused.
    fn validate(self, i: usize, registries: &[&str]) -> Result<ImageRef, KeyError> {
        let p = self;
        let key = format!("pin[{i}].image");
        let example = "e.g. image = \"docker.io/library/nginx:1.27\"";
        let text = p.image.ok_or_else(|| {
            err(
                &key,
                format!("is missing; name the image with its registry, {example}"),
            )
        })?;
        let image = image_list::resolve_strict(&text, registries)
            .map_err(|p| err(&key, format!("{p}; {example}")))?;
        Ok(image)
    }
}

// === impl RawSync ===

fn default_sync_interval() -> String {
    "6h".into()
}

/// `[[sync]]`: images (inline and from a file, all resolved against `registries`, the upstreams'
/// names), an interval of at least a second, platforms.
///
/// # Errors
/// The first key refused.
pub(super) fn sync(
    raw: Vec<RawSync>,
    registries: &[&str],
    sources: &dyn Sources,
) -> Result<Vec<SyncConfig>, KeyError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, s)| s.validate(i, registries, sources))
        .collect()
}

impl RawSync {
    /// Checks `sync[i]`, reading its image file (when set) through `sources`.
    ///
    /// # Errors
    /// The first key refused.
    fn validate(
        self,
        i: usize,
        registries: &[&str],
        sources: &dyn Sources,
    ) -> Result<SyncConfig, KeyError> {
        let s = self;
        let key = |k: &str| format!("sync[{i}].{k}");
        if s.images.is_none() && s.file.is_none() {
            return Err(err(
                &format!("sync[{i}]"),
                "lists no images; set images = [\"docker.io/library/nginx:1.27\"] or file = \"/etc/wharf/sync.list\" (one image per line)".into(),
            ));
        }
        let mut images: Vec<ImageRef> = Vec::new();
        for text in s.images.iter().flatten() {
            let image = image_list::resolve(text, registries).map_err(|p| {
                err(
                    &key("images"),
                    format!("{p}; e.g. images = [\"docker.io/library/nginx:1.27\"]"),
                )
            })?;
            if !images.contains(&image) {
                images.push(image);
            }
        }
        if let Some(path) = &s.file {
            let text = sources.read(path).map_err(|e| {
                err(
                    &key("file"),
                    format!(
                        "cannot read {} ({}); create it with one image per line (# for comments)",
                        path.display(),
                        io_reason(&e)
                    ),
                )
            })?;
            image_list::parse_list(&text, registries)
                .map_err(|p| err(&key("file"), format!("{} {p}", path.display())))?;
        }
        let interval = duration(&key("interval"), &s.interval)?;
        if interval < Duration::from_secs(1) {
            return Err(err(
                &key("interval"),
                "must be at least 1s; use e.g. interval = \"6h\"".into(),
            ));
        }
        let platforms = platforms(s.platforms.as_deref(), &key("platforms"))?;
        Ok(SyncConfig {
            images,
            file: s.file,
            interval,
            platforms,
            pin: s.pin,
            referrers: s.referrers,
            referrers_types: s.referrers_types,
        })
    }
}

/// `platforms`: absent (all platforms) or a non-empty list that parses.
fn platforms(list: Option<&[String]>, key: &str) -> Result<Option<Vec<Platform>>, KeyError> {
    match list {
        None => Ok(None),
        Some([]) => Err(err(
            key,
            "is empty; list platforms, e.g. platforms = [\"linux/amd64\", \"linux/arm64\"], or leave it out for all".into(),
        )),
        Some(list) => list
            .iter()
            .map(|p| p.parse::<Platform>())
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| err(key, e.to_string())),
    }
}

/// Parses an image reference whose registry must be the name of one of `upstreams`, and applies
/// Docker Hub's `library/` normalisation when it names Docker Hub. Used for `[[pin]]` and the
/// command line (`wharf pin IMAGE`).
///
/// # Errors
/// A message naming the reference and what is wrong with it (without a fix: callers add theirs).
pub fn resolve_image(text: &str, upstreams: &[UpstreamConfig]) -> Result<ImageRef, String> {
    let registries: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    image_list::resolve_strict(text, &registries).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::test_support::{assert_refusals, fake, load, UP};
    use crate::Config;

    #[test]
    fn sync_entries() {
        let text = format!(
            "{UP}[[sync]]\nimages = [\"nginx:1.27\", \"docker.io/library/nginx:1.27\", \"redis@sha256:{}\"]\ninterval = \"30m\"\nplatforms = [\"linux/amd64\", \"linux/arm/v7\"]\npin = false\n[[sync]]\nfile = \"/pw\"\n",
            "ab".repeat(32)
        );
        let mut sources = fake();
        sources.files.insert("/list", "# ship\nnginx:1\n".into());
        let c = Config::from_toml_with(
            &text.replace("/pw", "/list"),
            Path::new("wharf.toml"),
            &sources,
        )
        .unwrap();
        let s = &c.sync[0];
        let images: Vec<String> = s.images.iter().map(ToString::to_string).collect();
        assert_eq!(
            images,
            [
                "docker.io/library/nginx:1.27".to_owned(),
                format!("docker.io/library/redis@sha256:{}", "ab".repeat(32))
            ]
        );
        assert_eq!(s.interval, Duration::from_secs(1800));
        assert_eq!(
            s.platforms
                .as_ref()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm/v7"]
        );
        assert!(!s.pin);
        let s = &c.sync[1];
        assert!(s.images.is_empty() && s.pin && s.platforms.is_none());
        assert_eq!(s.file.as_deref(), Some(Path::new("/list")));
        assert_eq!(s.interval, Duration::from_secs(6 * 3600));
        assert!(load(UP).unwrap().sync.is_empty());

        for (body, want) in [
            ("interval = \"1h\"", "sync[0]: lists no images; set images ="),
            (
                "images = [\"quay.io/a:1\"]",
                "sync[0].images: \"quay.io/a:1\" names registry \"quay.io\", which is not an [[upstream]] name",
            ),
            ("file = \"/missing\"", "sync[0].file: cannot read /missing (no such file)"),
            ("file = \"/htpasswd\"", "sync[0].file: /htpasswd line 1:"),
            ("images = [\"nginx\"]\ninterval = \"500ms\"", "sync[0].interval: must be at least 1s"),
            ("images = [\"nginx\"]\ninterval = \"6\"", "sync[0].interval: \"6\" is not a duration"),
            ("images = [\"nginx\"]\ninterval = 6", "sync[0].interval: is a whole number, expected a string; durations are quoted"),
            ("images = [\"nginx\"]\nplatforms = []", "sync[0].platforms: is empty"),
            ("images = [\"nginx\"]\nplatforms = [\"linux\"]", "sync[0].platforms: \"linux\" is not a platform"),
            ("images = [\"nginx\"]\nevery = \"1h\"", "sync[0].every: unknown key; valid keys here are images, file, interval, platforms, pin"),
        ] {
            let e = load(&format!("{UP}[[sync]]\n{body}\n")).unwrap_err().to_string();
            assert!(e.starts_with("wharf.toml: "), "{e}");
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn pin_refusals_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            // Storage budget, gc and pins.
            (format!("{UP}[[pin]]\n"), "pin[0].image: is missing"),
            (
                format!("{UP}[[pin]]\nimage = \"nginx:1\"\n"),
                "pin[0].image: \"nginx:1\" is not an image reference (no registry",
            ),
            (
                format!("{UP}[[pin]]\nimage = \"quay.io/a/b:1\"\n"),
                "pin[0].image: \"quay.io/a/b:1\" names registry \"quay.io\", which is not an [[upstream]] name; start the image with one of: docker.io",
            ),
            (
                format!("{UP}[[pin]]\nimage = \"docker.io/a/b:1\"\ntag = \"x\"\n"),
                "pin[0].tag: unknown key; valid keys here are image",
            ),
        ];
        assert_refusals(&cases);
    }

    #[test]
    fn import_trusted_keys_and_sync_referrers() {
        let mut spki = crate::config::ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&[7u8; 32]);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &spki)
        );
        let mut sources = fake();
        sources.files.insert("/signer.pub", pem);
        let text = format!(
            "{UP}[import]\ntrusted_keys = [\"/signer.pub\"]\n[[sync]]\nimages = [\"nginx:1\"]\nreferrers_types = [\"application/spdx+json\"]\n[[sync]]\nimages = [\"nginx:1\"]\nreferrers = false\n"
        );
        let c = Config::from_toml_with(&text, Path::new("wharf.toml"), &sources).unwrap();
        assert_eq!(c.import.trusted_keys.len(), 1);
        assert_eq!(c.import.trusted_keys[0].key, [7u8; 32]);
        assert_eq!(c.import.trusted_keys[0].path, Path::new("/signer.pub"));
        assert!(c.sync[0].referrers && c.sync[0].referrers_types == ["application/spdx+json"]);
        assert!(!c.sync[1].referrers);
        assert!(load(UP).unwrap().import.trusted_keys.is_empty());

        let cases: Vec<(String, &str)> = vec![
            (
                format!("{UP}[import]\ntrusted_keys = [\"/missing.pub\"]\n"),
                "import.trusted_keys[0]: cannot read /missing.pub (no such file)",
            ),
            (
                format!("{UP}[import]\ntrusted_keys = [\"/pw\"]\n"),
                "import.trusted_keys[0]: /pw holds no PEM public key",
            ),
            (
                format!("{UP}[import]\nkeys = []\n"),
                "import.keys: unknown key",
            ),
        ];
        assert_refusals(&cases);
    }
}
