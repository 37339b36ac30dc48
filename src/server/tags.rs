//! `GET /v2/<name>/tags/list` with `n` and `last`: asked of the upstream, answered under the name the
//! client used, with a `Link` to the next page that points back at wharf. When the upstream is
//! offline, or cannot answer and `serve_stale` is on, the list comes from the tags wharf has cached
//! (with a `Warning` in the second case).

use http::header::{CONTENT_TYPE, LINK, WARNING};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::manifests::STALE_WARNING;
use super::response::{self, ApiError, Area, Body, CacheStatus, Fault};
use super::route::Route;
use super::App;
use crate::oci::ErrorCode;
use crate::upstream::auth;

use crate::limits::MAX_TAGS_BODY;

#[derive(Deserialize)]
struct UpstreamList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Serialize)]
struct List<'a> {
    name: &'a str,
    tags: &'a [String],
}

/// One page of tags, and whether more follow.
struct Page {
    tags: Vec<String>,
    more: bool,
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
        match upstream_page(app, route, query).await {
            Ok(page) => (page, CacheStatus::Miss),
            Err(e) if app.serve_stale && e.upstream_trouble() => {
                let page = cached_page(app, route, query).map_err(|_| e.clone())?;
                warn!(upstream = %upstream.name(), repo = %route.name, error = %e.message(), "upstream cannot be asked; listing cached tags");
                (page, CacheStatus::Stale)
            }
            Err(e) => return Err(e),
        }
    };
    let next = (page.more && !page.tags.is_empty()).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = query.n {
            q.append_pair("n", &n.to_string());
        }
        q.append_pair("last", page.tags.last().map_or("", String::as_str));
        if let Some(ns) = query.ns {
            q.append_pair("ns", ns);
        }
        format!(
            "</v2/{}/tags/list?{}>; rel=\"next\"",
            route.client_name,
            q.finish()
        )
    });
    let json = serde_json::to_vec(&List {
        name: &route.client_name,
        tags: &page.tags,
    })
    .map_err(|e| ApiError::internal("encoding a tag list", &e))?;
    let mut response = Response::new(if *method == Method::HEAD {
        response::empty()
    } else {
        response::full(json)
    });
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(super::response::header::X_CACHE, cache.header_value());
    if let Some(next) = next {
        h.insert(LINK, response::header_value(&next));
    }
    if cache == CacheStatus::Stale {
        h.insert(WARNING, HeaderValue::from_static(STALE_WARNING));
    }
    Ok(response)
}

async fn upstream_page(app: &App, route: &Route, query: &Query<'_>) -> Result<Page, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let upstream_query = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = query.n {
            q.append_pair("n", &n.to_string());
        }
        if let Some(last) = query.last {
            q.append_pair("last", last);
        }
        q.finish()
    };
    let mut path = format!("/v2/{}/tags/list", route.name);
    if !upstream_query.is_empty() {
        path = format!("{path}?{upstream_query}");
    }
    let (headers, body) = upstream
        .get_small(
            &path,
            HeaderMap::new(),
            &auth::pull_scope(route.name.as_str()),
            MAX_TAGS_BODY,
        )
        .await
        .map_err(|e| ApiError::from_upstream(&e, Area::Tags))?;
    let more = headers.contains_key(LINK);
    let parsed: UpstreamList = serde_json::from_slice(&body)
        .map_err(|_| invalid(upstream.name(), "a tag list that is not JSON"))?;
    Ok(Page {
        tags: parsed.tags.unwrap_or_default(),
        more,
    })
}

/// A page of the tags cached for the repository, paginated like the spec says: lexical order,
/// starting after `last`, at most `n`.
fn cached_page(app: &App, route: &Route, query: &Query<'_>) -> Result<Page, ApiError> {
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
    Ok(Page { tags, more })
}

fn invalid(upstream: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::Unknown,
        format!("upstream {upstream} sent {what}"),
    )
    .fault(Fault::Upstream)
}
