//! Property tests of the parsers that untrusted bytes reach: request routing, repository names,
//! tags, references and digests, `Range` headers, `WWW-Authenticate` challenges, tar headers,
//! `wharf-bundle.json`, and manifests. Each parser must not panic on any input, and must give back
//! what a valid input was built from.
//!
//! `cargo test` runs [`CASES`] cases per property; for a longer run set `PROPTEST_CASES` (it wins
//! over the default here), e.g. `PROPTEST_CASES=100000 cargo test --release --test parsers_prop`.

mod common;

use http::{HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use wharf::airgap::bundle::{self, BundleFile, BundleImage, BundleManifest, Omitted, Source};
use wharf::airgap::tar::{Reader, TarError};
use wharf::oci::reference::{NAME_MAX, TAG_MAX};
use wharf::oci::{media, Digest, Reference, RepoName, Tag};
use wharf::server::blobs::{parse_range, RangeRequest};
use wharf::server::route::{self, Endpoint, Parsed, RegistryTable};
use wharf::upstream::auth::{parse_challenges, Challenge};

/// Cases per property in a plain `cargo test`.
const CASES: u32 = 256;

/// The configuration: [`CASES`] cases, unless `PROPTEST_CASES` says otherwise. An explicit
/// `cases` in a `ProptestConfig` would override the variable (proptest reads it only into the
/// default configuration), so the default is set only when the variable is absent.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    config
}

// === strategies ===

/// A path component of a repository name: `[a-z0-9]+ ((. | _ | __ | -+) [a-z0-9]+)*`.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}(([._]|__|-{1,3})[a-z0-9]{1,8}){0,2}"
}

/// A valid repository name.
fn repo_name() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..5)
        .prop_map(|c| c.join("/"))
        .prop_filter("at most NAME_MAX bytes", |n| n.len() <= NAME_MAX)
}

/// A valid tag.
fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}".prop_filter("at most TAG_MAX", |t| t.len() <= TAG_MAX)
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_bytes)
}

/// What a path asks for, and its suffix after the name.
#[derive(Debug, Clone)]
enum Want {
    Tag(String),
    ManifestDigest(Digest),
    Blob(Digest),
    Referrers(Digest),
    TagsList,
}

fn want() -> impl Strategy<Value = Want> {
    prop_oneof![
        tag().prop_map(Want::Tag),
        digest().prop_map(Want::ManifestDigest),
        digest().prop_map(Want::Blob),
        digest().prop_map(Want::Referrers),
        Just(Want::TagsList),
    ]
}

impl Want {
    fn suffix(&self) -> String {
        match self {
            Want::Tag(t) => format!("manifests/{t}"),
            Want::ManifestDigest(d) => format!("manifests/{d}"),
            Want::Blob(d) => format!("blobs/{d}"),
            Want::Referrers(d) => format!("referrers/{d}"),
            Want::TagsList => "tags/list".into(),
        }
    }

    fn matches(&self, endpoint: &Endpoint) -> bool {
        match (self, endpoint) {
            (Want::Tag(t), Endpoint::Manifest(Reference::Tag(got))) => got.as_str() == t,
            (Want::ManifestDigest(d), Endpoint::Manifest(Reference::Digest(got))) => got == d,
            (Want::Blob(d), Endpoint::Blob(got)) => got == d,
            (
                Want::Referrers(d),
                Endpoint::Referrers {
                    digest,
                    artifact_type: None,
                },
            ) => digest == d,
            (
                Want::TagsList,
                Endpoint::TagsList {
                    n: None,
                    last: None,
                },
            ) => true,
            _ => false,
        }
    }
}

/// `upstream.test` (the default) and `hub.test` (Docker Hub rules: `library/` for one component).
fn table() -> RegistryTable {
    RegistryTable::new(
        vec![("upstream.test".into(), false), ("hub.test".into(), true)],
        Some(0),
    )
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::OPTIONS),
    ]
}

/// Paths made of the pieces routing looks for, so that deep branches are reached.
fn api_like_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("manifests".to_owned()),
        Just("blobs".to_owned()),
        Just("referrers".to_owned()),
        Just("tags".to_owned()),
        Just("list".to_owned()),
        Just("upstream.test".to_owned()),
        Just("hub.test".to_owned()),
        Just("localhost:5000".to_owned()),
        Just(String::new()),
        Just("sha256:".to_owned()),
        "[a-z0-9._:-]{0,12}",
        ".{0,8}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| format!("/v2/{}", p.join("/")))
}

// === routing ===

proptest! {
    #![proptest_config(config())]

    #[test]
    fn routing_never_panics(
        method in method(),
        path in prop_oneof![".{0,64}", api_like_path()],
        query in prop::option::of(".{0,40}"),
    ) {
        let _ = route::parse(&method, &path, query.as_deref(), &table());
    }

    #[test]
    fn a_path_to_the_default_upstream_routes_to_its_parts(name in repo_name(), want in want()) {
        let first = name.split('/').next().unwrap_or("");
        // A first component with a '.' (or localhost) names a registry, as in docker's grammar.
        prop_assume!(!first.contains('.') && first != "localhost");
        let path = format!("/v2/{name}/{}", want.suffix());
        let parsed = route::parse(&Method::GET, &path, None, &table());
        let Ok(Parsed::Api(route)) = parsed else {
            return Err(TestCaseError::fail(format!("{path}: {parsed:?}")));
        };
        prop_assert_eq!(route.upstream, 0);
        prop_assert_eq!(route.name.as_str(), name.as_str());
        prop_assert_eq!(&route.client_name, &name);
        prop_assert!(want.matches(&route.endpoint), "{path}: {:?}", route.endpoint);
    }

    #[test]
    fn a_prefixed_path_routes_to_its_registry_and_parts(
        name in repo_name(),
        want in want(),
        hub in any::<bool>(),
        by_ns in any::<bool>(),
    ) {
        let registry = if hub { "hub.test" } else { "upstream.test" };
        let (path, query) = if by_ns {
            (format!("/v2/{name}/{}", want.suffix()), Some(format!("ns={registry}")))
        } else {
            (format!("/v2/{registry}/{name}/{}", want.suffix()), None)
        };
        let parsed = route::parse(&Method::HEAD, &path, query.as_deref(), &table());
        let Ok(Parsed::Api(route)) = parsed else {
            return Err(TestCaseError::fail(format!("{path} {query:?}: {parsed:?}")));
        };
        prop_assert_eq!(route.upstream, usize::from(hub));
        let at_upstream = if hub && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.clone()
        };
        prop_assert_eq!(route.name.as_str(), at_upstream.as_str());
        let client_name = if by_ns { name.clone() } else { format!("{registry}/{name}") };
        prop_assert_eq!(&route.client_name, &client_name);
        prop_assert!(want.matches(&route.endpoint), "{path}: {:?}", route.endpoint);
    }

    // === names, tags, references, digests ===

    #[test]
    fn names_tags_references_and_digests_never_panic_and_round_trip(s in ".{0,80}") {
        if let Ok(name) = s.parse::<RepoName>() {
            prop_assert_eq!(name.to_string(), s.clone());
        }
        if let Ok(tag) = s.parse::<Tag>() {
            prop_assert_eq!(tag.to_string(), s.clone());
        }
        if let Ok(reference) = s.parse::<Reference>() {
            prop_assert_eq!(reference.to_string().parse::<Reference>(), Ok(reference));
        }
        if let Ok(digest) = s.parse::<Digest>() {
            prop_assert_eq!(digest.to_string().parse::<Digest>(), Ok(digest));
        }
    }

    #[test]
    fn digest_like_strings_never_panic(s in "(sha256|sha512|[a-z0-9+._-]{0,8}):[0-9a-fA-F]{0,70}") {
        if let Ok(digest) = s.parse::<Digest>() {
            prop_assert_eq!(digest.to_string(), s.to_ascii_lowercase());
        }
    }

    #[test]
    fn valid_values_round_trip(name in repo_name(), tag in tag(), digest in digest()) {
        prop_assert_eq!(name.parse::<RepoName>().map(|n| n.to_string()), Ok(name.clone()));
        prop_assert_eq!(tag.parse::<Tag>().map(|t| t.to_string()), Ok(tag.clone()));
        let text = digest.to_string();
        prop_assert_eq!(text.parse::<Digest>(), Ok(digest));
        prop_assert_eq!(text.parse::<Reference>(), Ok(Reference::Digest(digest)));
        prop_assert_eq!(
            tag.parse::<Reference>().map(|r| r.to_string()),
            Ok(tag.clone())
        );
        prop_assert_eq!(Digest::from_hex(&digest.hex()), Ok(digest));
    }

    // === Range ===

    #[test]
    fn any_range_header_gives_a_range_inside_the_blob(
        header in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            "bytes=[0-9 ,-]{0,30}".prop_map(String::into_bytes),
            "bytes= ?[0-9]{0,22} ?- ?[0-9]{0,22}".prop_map(String::into_bytes),
        ],
        size in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..10_000],
    ) {
        let Ok(value) = HeaderValue::from_bytes(&header) else { return Ok(()) };
        if let RangeRequest::Partial(start, end) = parse_range(Some(&value), size) {
            prop_assert!(start < end && end <= size, "{value:?} of {size}: {start}..{end}");
        }
    }

    #[test]
    fn well_formed_ranges_are_served_as_asked(
        size in 1u64..u64::MAX,
        a in any::<u64>(),
        b in any::<u64>(),
        n in 1u64..u64::MAX,
    ) {
        let (first, last) = (a.min(b) % size, a.max(b));
        let header = HeaderValue::from_str(&format!("bytes={first}-{last}")).unwrap();
        prop_assert_eq!(
            parse_range(Some(&header), size),
            RangeRequest::Partial(first, last.min(size - 1) + 1)
        );
        let open = HeaderValue::from_str(&format!("bytes={first}-")).unwrap();
        prop_assert_eq!(parse_range(Some(&open), size), RangeRequest::Partial(first, size));
        let suffix = HeaderValue::from_str(&format!("bytes=-{n}")).unwrap();
        prop_assert_eq!(
            parse_range(Some(&suffix), size),
            RangeRequest::Partial(size - n.min(size), size)
        );
    }

    // === WWW-Authenticate ===

    #[test]
    fn any_challenge_header_parses_without_panicking(
        header in prop_oneof![
            ".{0,120}",
            "(Bearer|Basic|bearer|Digest)( [a-z]{0,8}=(\"[^\"]{0,20}\"|[a-z0-9]{0,8}),?){0,4}",
        ],
    ) {
        let _ = parse_challenges(&header);
    }

    #[test]
    fn a_bearer_challenge_gives_back_its_parameters(
        realm in "https://[a-z]{1,10}\\.test(:[0-9]{1,5})?/[a-z/]{0,12}",
        service in "[a-z0-9.:-]{1,16}",
        scope in "repository:[a-z0-9/]{1,16}:pull(,push)?",
        order in Just([0usize, 1, 2]).prop_shuffle(),
        space in "( ?)",
    ) {
        let params = [
            format!("realm=\"{realm}\""),
            format!("service=\"{service}\""),
            format!("scope=\"{scope}\""),
        ];
        let header = format!(
            "Bearer {}",
            order.iter().map(|i| params[*i].as_str()).collect::<Vec<_>>().join(&format!(",{space}"))
        );
        let challenges = parse_challenges(&header);
        prop_assert_eq!(challenges.len(), 1, "{}", header);
        let Challenge::Bearer(bearer) = &challenges[0] else {
            return Err(TestCaseError::fail(format!("{header}: {challenges:?}")));
        };
        prop_assert_eq!(&bearer.realm, &realm);
        prop_assert_eq!(bearer.service.as_deref(), Some(service.as_str()));
        prop_assert_eq!(bearer.scope.as_deref(), Some(scope.as_str()));
    }
}

// === tar ===

/// Reads a whole archive as an import does: every entry, every chunk of its data, or (with
/// `skip`) no data at all. Returns the entries read, or the error.
fn read_archive(bytes: &[u8], skip: bool) -> Result<usize, TarError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut reader = Reader::new(bytes);
        let mut entries = 0;
        while let Some(_entry) = reader.next().await? {
            entries += 1;
            while !skip && !reader.chunk(4096).await?.is_empty() {}
        }
        Ok(entries)
    })
}

/// A header block with these fields and a correct checksum.
fn header_block(name: &[u8], flag: u8, size: u64, raw: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    // Start from arbitrary bytes in the fields the reader does not set here.
    let bytes = h.as_mut_bytes();
    for (i, b) in raw.iter().enumerate().take(512) {
        if !(0..100).contains(&i)
            && !(124..136).contains(&i)
            && i != 156
            && !(257..265).contains(&i)
        {
            bytes[i] = *b;
        }
    }
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_size(size);
    h.as_mut_bytes()[156] = flag;
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn flag() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'0'),
        Just(0u8),
        Just(b'5'),
        Just(b'x'),
        Just(b'g'),
        Just(b'L'),
        Just(b'K'),
        Just(b'2'),
        any::<u8>(),
    ]
}

fn tar_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..2048,
        Just(u64::MAX),
        (u64::MAX - 1024)..=u64::MAX,
        any::<u64>(),
        Just(0o777_7777_7777u64),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_read_as_tar_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let _ = read_archive(&bytes, false);
        let _ = read_archive(&bytes, true);
    }

    #[test]
    fn any_checksummed_headers_read_without_panicking(
        headers in prop::collection::vec(
            (
                prop_oneof![
                    Just(b"wharf-bundle.json".to_vec()),
                    Just(b"blobs/sha256/".to_vec()),
                    Just(b"../x".to_vec()),
                    Just(b"./a/".to_vec()),
                    prop::collection::vec(any::<u8>(), 0..100),
                ],
                flag(),
                tar_size(),
                prop::collection::vec(any::<u8>(), 0..512),
                prop::collection::vec(any::<u8>(), 0..1100),
            ),
            1..4,
        ),
        end in prop::collection::vec(Just(0u8), 0..1100),
    ) {
        let mut archive = Vec::new();
        for (name, flag, size, raw, data) in &headers {
            archive.extend(header_block(name, *flag, *size, raw));
            archive.extend_from_slice(data);
        }
        archive.extend_from_slice(&end);
        let _ = read_archive(&archive, false);
        let _ = read_archive(&archive, true);
        // The command that receives a bundle picks wharf-bundle.json out of the first bytes.
        for chunk in [1usize, 7, 512, 4096] {
            let mut head = bundle::Head::default();
            for piece in archive.chunks(chunk) {
                head.feed(piece);
            }
            let _ = head.manifest();
        }
    }

    #[test]
    fn sizes_written_read_back(sizes in prop::collection::vec(tar_size(), 1..4)) {
        use wharf::airgap::tar::{entry_len, padded, Writer};
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for size in sizes {
            let Some(padded) = padded(size) else {
                prop_assert!(size > u64::MAX - 511);
                prop_assert_eq!(entry_len(size), None);
                continue;
            };
            prop_assert!(padded >= size && padded - size < 512 && padded % 512 == 0);
            // The header (not the data) of a file of this size, read back.
            let bytes = runtime.block_on(async {
                let mut w = Writer::new(Vec::new());
                w.file("f", size, 0).await.unwrap();
                w.finish().await.unwrap()
            });
            if let Some(len) = entry_len(size) {
                prop_assert_eq!(len - padded, bytes.len() as u64 - 1024);
            }
            let entry = runtime.block_on(async { Reader::new(&bytes[..]).next().await });
            let entry = entry.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(entry.map(|e| e.size), Some(size));
        }
    }
}

// === bundle JSON ===

fn bundle_manifest() -> impl Strategy<Value = BundleManifest> {
    let image = (
        "[a-z.]{1,12}/[a-z/]{1,12}:[a-z0-9]{1,8}",
        digest(),
        prop_oneof![Just(media::OCI_MANIFEST), Just(media::OCI_INDEX)],
        any::<u64>(),
        prop::option::of("20[0-9]{2}-0[1-9]-1[0-9]T0[0-9]:[0-5][0-9]:[0-5][0-9]Z"),
        prop::collection::vec((digest(), "[a-z0-9/]{0,12}", ".{0,10}"), 0..3),
    )
        .prop_map(
            |(reference, digest, media_type, size, fetched_at, omitted)| BundleImage {
                reference,
                digest,
                media_type: media_type.to_owned(),
                size,
                fetched_at,
                omitted: omitted
                    .into_iter()
                    .map(|(digest, platform, reason)| Omitted {
                        digest,
                        platform,
                        reason,
                    })
                    .collect(),
                platforms: Vec::new(),
                bytes: None,
                referrer_of: None,
                belongs_to: None,
                artifact_type: None,
            },
        );
    let file = (digest(), any::<u64>()).prop_map(|(sha256, size)| BundleFile {
        path: bundle::blob_path(&sha256),
        sha256,
        size,
    });
    (
        ".{0,20}",
        (".{0,10}", ".{0,10}", ".{0,10}"),
        prop::option::of(prop::collection::vec("[a-z]{1,6}/[a-z0-9]{1,6}", 0..3)),
        prop::collection::vec(image, 0..4),
        prop::collection::vec(file, 0..6),
        prop::collection::vec(digest(), 0..3),
    )
        .prop_map(
            |(created, (tool, host, storage), platforms, images, files, excluded)| BundleManifest {
                wharf_bundle_version: bundle::VERSION,
                created,
                source: Source {
                    tool,
                    host,
                    storage,
                },
                since: None,
                platforms,
                images,
                files,
                excluded,
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_as_a_bundle_manifest_without_panicking(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "\\{\"wharfBundleVersion\": ?-?[0-9]{1,20}(,.{0,60})?\\}".prop_map(String::into_bytes),
        ],
    ) {
        let _ = bundle::parse_manifest(&bytes);
    }

    #[test]
    fn bundle_manifests_round_trip(manifest in bundle_manifest()) {
        let json = serde_json::to_vec(&manifest).unwrap();
        prop_assert_eq!(bundle::parse_manifest(&json), Ok(manifest.clone()));
        // What is shown of a bundle is computed from its sizes, which are whatever the file says.
        let _ = manifest.blob_bytes();
        let _ = manifest.known_digests();
        // Another version is refused, whatever else the document holds.
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["wharfBundleVersion"] = (bundle::VERSION + 1).into();
        prop_assert!(bundle::parse_manifest(&serde_json::to_vec(&value).unwrap()).is_err());
    }
}

// === manifests ===

fn descriptor(digest: &Digest, media_type: &str) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": 1 })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_read_as_a_manifest_without_panicking(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "\\{(\"(mediaType|config|layers|manifests|blobs|fsLayers|digest|blobSum|schemaVersion)\": ?(\\[\\{\"digest\": ?\"sha256:[0-9a-f]{0,64}\"\\}\\]|\"[a-z./+-]{0,30}\"|[0-9]|null|\\{\\}),?){0,5}\\}"
                .prop_map(String::into_bytes),
        ],
    ) {
        let _ = media::referenced_digests(&bytes);
        let _ = media::sniff_manifest_type(&bytes);
        let _ = media::evident_manifest_type(&bytes);
    }

    #[test]
    fn an_image_manifest_refers_to_its_config_and_layers(
        config in digest(),
        layers in prop::collection::vec(digest(), 0..6),
        subject in prop::option::of(digest()),
        docker in any::<bool>(),
    ) {
        let media_type = if docker { media::DOCKER_MANIFEST } else { media::OCI_MANIFEST };
        let mut doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(&config, "application/vnd.oci.image.config.v1+json"),
            "layers": layers.iter().map(|l| descriptor(l, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
        });
        if let Some(subject) = subject {
            doc["subject"] = descriptor(&subject, media::OCI_MANIFEST);
        }
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut want = vec![config];
        for l in &layers {
            if !want.contains(l) {
                want.push(*l);
            }
        }
        prop_assert_eq!(media::referenced_digests(&bytes), want);
        prop_assert_eq!(media::sniff_manifest_type(&bytes), Some(media_type.to_owned()));
        prop_assert_eq!(media::evident_manifest_type(&bytes), Some(media_type));
    }

    #[test]
    fn an_index_refers_to_its_manifests(manifests in prop::collection::vec(digest(), 0..6)) {
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "manifests": manifests.iter().map(|m| descriptor(m, media::OCI_MANIFEST)).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut want: Vec<Digest> = Vec::new();
        for m in &manifests {
            if !want.contains(m) {
                want.push(*m);
            }
        }
        prop_assert_eq!(media::referenced_digests(&bytes), want);
        prop_assert_eq!(media::sniff_manifest_type(&bytes), Some(media::OCI_INDEX.to_owned()));
        prop_assert_eq!(media::evident_manifest_type(&bytes), Some(media::OCI_INDEX));
    }
}
