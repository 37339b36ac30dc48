//! `GET /v2/<name>/tags/list` with `n` and `last`: asked of the upstream, answered under the name the
//! client used, with a `Link` to the next page that points back at wharf.

use http::header::{CONTENT_TYPE, LINK};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::response::{self, ApiError, Area, Body, Fault};
use super::route::Route;
use super::App;
use crate::oci::ErrorCode;
use crate::upstream::auth;

/// The largest tag list read from an upstream.
const MAX_TAGS_BODY: usize = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct UpstreamList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Serialize)]
struct List<'a> {
    name: &'a str,
    tags: Vec<String>,
}

/// Serves a tag list request.
pub async fn list(
    app: &App,
    route: &Route,
    n: Option<u32>,
    last: Option<&str>,
    ns: Option<&str>,
    method: &Method,
) -> Result<Response<Body>, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let query = {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = n {
            query.append_pair("n", &n.to_string());
        }
        if let Some(last) = last {
            query.append_pair("last", last);
        }
        query.finish()
    };
    let mut path = format!("/v2/{}/tags/list", route.name);
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let up_err = |e: crate::upstream::UpstreamError| ApiError::from_upstream(&e, Area::Tags);
    let mut res = upstream
        .send(
            Method::GET,
            &path,
            HeaderMap::new(),
            &auth::pull_scope(route.name.as_str()),
        )
        .await
        .map_err(up_err)?;
    if !res.status().is_success() {
        return Err(up_err(upstream.status_error(res).await));
    }
    let has_next = res.headers().contains_key(LINK);
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| up_err(upstream.transport(e)))?
    {
        if body.len() + chunk.len() > MAX_TAGS_BODY {
            return Err(invalid(upstream.name(), "a tag list over 16 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    let parsed: UpstreamList = serde_json::from_slice(&body)
        .map_err(|_| invalid(upstream.name(), "a tag list that is not JSON"))?;
    let tags = parsed.tags.unwrap_or_default();
    let next = (has_next && !tags.is_empty()).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = n {
            q.append_pair("n", &n.to_string());
        }
        q.append_pair("last", tags.last().map_or("", String::as_str));
        if let Some(ns) = ns {
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
        tags,
    })
    .map_err(|e| ApiError::internal("encoding a tag list", &e))?;
    let mut response = Response::new(if *method == Method::HEAD {
        response::empty()
    } else {
        response::full(json)
    });
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(next) = next {
        response
            .headers_mut()
            .insert(LINK, response::header_value(&next));
    }
    Ok(response)
}

fn invalid(upstream: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::Unknown,
        format!("upstream {upstream} sent {what}"),
    )
    .fault(Fault::Upstream)
}
