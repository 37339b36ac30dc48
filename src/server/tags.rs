//! `GET /v2/<name>/tags/list` with `n` and `last`: asked of the upstream, answered under the name the
//! client used, with a `Link` to the next page that points back at wharf. When the upstream is
//! offline, or cannot answer and `serve_stale` is on, the list comes from the tags wharf has cached
//! (with a `Warning` in the second case).
//!
//! A tag list can be large (Docker Hub's busiest repositories list tens of thousands of tags), so
//! it is bounded three ways: the upstream's answer is read up to [`crate::limits::MAX_TAGS_BODY`]; concurrent
//! requests for the same page share one upstream request, and its answer is kept for a few seconds
//! ([`TAG_LIST_TTL`], or `tag_ttl` when shorter) in [`TagLists`], whose entries are weighed by
//! size within [`TAG_LISTS_BYTES`]; and every response sends the one kept copy of the tags (a
//! prepared JSON array) between a small per-request prefix and suffix, so N clients of a 15 MiB
//! list cost one 15 MiB buffer, not N.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK, WARNING};
use http::{HeaderValue, Method, Response, StatusCode};
use serde::Deserialize;
use tracing::warn;

use super::manifests::STALE_WARNING;
use super::response::{self, ApiError, Area, Body, CacheStatus, Fault};
use super::route::Route;
use super::App;
use crate::limits::{TAG_LISTS_BYTES, TAG_LIST_TTL};
use crate::oci::{ErrorCode, RepoName};
use crate::upstream::TagsPage;

/// Which page of which tag list: upstream, repository at the upstream, `n`, `last`.
pub type ListKey = (usize, RepoName, Option<u32>, Option<String>);

/// Tag lists fetched from upstreams: one upstream request for all concurrent requests of a page,
/// kept briefly, weighed by size.
pub type TagLists = moka::future::Cache<ListKey, Arc<Listing>>;

/// Builds the tag-list cache: entries live [`TAG_LIST_TTL`] or `tag_ttl`, whichever is shorter,
/// within [`TAG_LISTS_BYTES`] in all.
pub fn tag_lists(tag_ttl: Duration) -> TagLists {
    moka::future::Cache::builder()
        .max_capacity(TAG_LISTS_BYTES)
        .weigher(|key: &ListKey, listing: &Arc<Listing>| {
            let key_len = key.1.as_str().len() + key.3.as_ref().map_or(0, String::len);
            u32::try_from(listing.weight() + key_len).unwrap_or(u32::MAX)
        })
        // moka refuses a zero TTL; with tag_ttl = 0 a page is still shared by concurrent requests.
        .time_to_live(tag_ttl.clamp(Duration::from_millis(1), TAG_LIST_TTL))
        .build()
}

/// One page of tags as served: the tags as a JSON array, ready to send, and whether more follow.
#[derive(Debug)]
pub struct Listing {
    /// `["a","b",...]`.
    tags_json: Bytes,
    /// The page's last tag, for the `Link` to the next page.
    last: Option<String>,
    /// Whether the upstream (or the cache) has more after this page.
    more: bool,
}

#[derive(Deserialize)]
struct UpstreamList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

// === impl Listing ===

impl Listing {
    fn new(tags: &[String], more: bool) -> Result<Self, ApiError> {
        let json =
            serde_json::to_vec(tags).map_err(|e| ApiError::internal("encoding a tag list", &e))?;
        Ok(Self {
            tags_json: Bytes::from(json),
            last: tags.last().cloned(),
            more,
        })
    }

    /// Bytes held, roughly.
    fn weight(&self) -> usize {
        self.tags_json.len() + self.last.as_ref().map_or(0, String::len) + 64
    }
}

/// What the client asked for.
pub struct Query<'a> {
    /// `n`: the page size.
    pub n: Option<u32>,
    /// `last`: the tag after which the page starts.
    pub last: Option<&'a str>,
    /// `ns`: kept in the `Link` to the next page.
    pub ns: Option<&'a str>,
}

/// Serves a tag list request.
pub async fn list(
    app: &App,
    route: &Route,
    query: &Query<'_>,
    method: &Method,
) -> Result<Response<Body>, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let (page, cache) = if upstream.offline() {
        (cached_page(app, route, query)?, CacheStatus::Hit)
    } else {
        match shared_page(app, route, query).await {
            Ok(found) => found,
            Err(e) if app.manifests.policy().serve_stale && e.upstream_trouble() => {
                let page = cached_page(app, route, query).map_err(|_| e.clone())?;
                warn!(upstream = %upstream.name(), repo = %route.name, error = %e.message(), "upstream cannot be asked; listing cached tags");
                (page, CacheStatus::Stale)
            }
            Err(e) => return Err(e),
        }
    };
    let next = page.last.as_deref().filter(|_| page.more).map(|last| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = query.n {
            q.append_pair("n", &n.to_string());
        }
        q.append_pair("last", last);
        if let Some(ns) = query.ns {
            q.append_pair("ns", ns);
        }
        format!(
            "</v2/{}/tags/list?{}>; rel=\"next\"",
            route.client_name,
            q.finish()
        )
    });
    // `{"name":<name>,"tags":` + the shared array + `}`: the array is never copied.
    let name = serde_json::to_string(&route.client_name)
        .map_err(|e| ApiError::internal("encoding a tag list", &e))?;
    let prefix = Bytes::from(format!(r#"{{"name":{name},"tags":"#));
    let suffix = Bytes::from_static(b"}");
    let len = prefix.len() + page.tags_json.len() + suffix.len();
    let mut response = Response::new(if *method == Method::HEAD {
        response::empty()
    } else {
        let chunks = [prefix, page.tags_json.clone(), suffix].map(Ok);
        response::stream(Box::pin(futures_util::stream::iter(chunks)))
    });
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(super::response::header::X_CACHE, cache.header_value());
    if let Some(next) = next {
        h.insert(LINK, response::header_value(&next));
    }
    if cache == CacheStatus::Stale {
        h.insert(WARNING, HeaderValue::from_static(STALE_WARNING));
    }
    Ok(response)
}

/// The page from [`TagLists`], or from one upstream request shared by every request for it that
/// arrives meanwhile (`Miss` for all of them: each got the upstream's answer of now).
async fn shared_page(
    app: &App,
    route: &Route,
    query: &Query<'_>,
) -> Result<(Arc<Listing>, CacheStatus), ApiError> {
    let key: ListKey = (
        route.upstream,
        route.name.clone(),
        query.n,
        query.last.map(str::to_owned),
    );
    if let Some(page) = app.tag_lists.get(&key).await {
        return Ok((page, CacheStatus::Hit));
    }
    let page = app
        .tag_lists
        .try_get_with(key, async {
            upstream_page(app, route, query).await.map(Arc::new)
        })
        .await
        .map_err(|e| (*e).clone())?;
    Ok((page, CacheStatus::Miss))
}

async fn upstream_page(app: &App, route: &Route, query: &Query<'_>) -> Result<Listing, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let TagsPage { body, more } = upstream
        .tags(&route.name, query.n, query.last)
        .await
        .map_err(|e| ApiError::from_upstream(&e, Area::Tags))?;
    let parsed: UpstreamList = serde_json::from_slice(&body)
        .map_err(|_| invalid(upstream.name(), "a tag list that is not JSON"))?;
    drop(body);
    Listing::new(&parsed.tags.unwrap_or_default(), more)
}

/// A page of the tags cached for the repository, paginated like the spec says: lexical order,
/// starting after `last`, at most `n`.
fn cached_page(app: &App, route: &Route, query: &Query<'_>) -> Result<Arc<Listing>, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let mut tags = app
        .cache
        .index()
        .tags_of(upstream.name(), &route.name)
        .map_err(|e| ApiError::internal("index failure", &e))?;
    if tags.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!(
                "the mirror has no cached tags of this repository and cannot ask upstream {}",
                upstream.name()
            ),
        ));
    }
    tags.sort();
    if let Some(last) = query.last {
        tags.retain(|t| t.as_str() > last);
    }
    let mut more = false;
    if let Some(n) = query.n.and_then(|n| usize::try_from(n).ok()) {
        more = tags.len() > n;
        tags.truncate(n);
    }
    Listing::new(&tags, more).map(Arc::new)
}

fn invalid(upstream: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::Unknown,
        format!("upstream {upstream} sent {what}"),
    )
    .fault(Fault::Upstream)
}
