//! The web UI under `/ui/`: plain HTML, CSS and ES modules from `gateway/ui/`, embedded in the
//! binary. The pages hold no data; they call the API from the same origin, with the same
//! tokens, so they are served without one.

use super::handler::{Gateway, ResponseBody};
use super::response::{full, json_response};
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Response, StatusCode};

/// Where the UI lives.
pub(super) const UI_PATH: &str = "/ui";

/// Nothing but this origin: no inline script or style, no frame, no form elsewhere.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

/// Every file of the UI. A file added to `gateway/ui/` and not listed here fails a test.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("format.js", "text/javascript; charset=utf-8"),
    asset!("poll.js", "text/javascript; charset=utf-8"),
    asset!("overview.js", "text/javascript; charset=utf-8"),
    asset!("queries.js", "text/javascript; charset=utf-8"),
    asset!("detail.js", "text/javascript; charset=utf-8"),
    asset!("console.js", "text/javascript; charset=utf-8"),
];

/// What the pages need to know of the gateway's settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct UiSettings {
    /// `ui.enabled`.
    pub(super) enabled: bool,
    /// `ui.allow_cancel`.
    pub(super) allow_cancel: bool,
    /// `auth.enabled`: the pages ask for a token.
    pub(super) auth: bool,
}

/// Says whether `path` is the UI's.
pub(super) fn is_ui_path(path: &str) -> bool {
    path == UI_PATH || path.starts_with("/ui/")
}

// === impl Gateway ===

impl Gateway {
    /// `GET /ui/...`: an embedded file, the pages' settings, or `None` (404).
    pub(super) fn ui(&self, path: &str) -> Option<Response<ResponseBody>> {
        let settings = self.inner.ui;
        if !settings.enabled {
            return None;
        }
        let name = match path.strip_prefix("/ui/") {
            None => {
                let mut response = full(StatusCode::MOVED_PERMANENTLY, Bytes::new());
                response
                    .headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("/ui/"));
                return Some(response);
            }
            Some("") => "index.html",
            Some(name) => name,
        };
        let mut response = if name == "config.json" {
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "allow_cancel": settings.allow_cancel,
                    "auth": settings.auth,
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            )
        } else {
            let asset = ASSETS.iter().find(|asset| asset.name == name)?;
            let mut response = full(StatusCode::OK, Bytes::from_static(asset.bytes));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
            response
        };
        let headers = response.headers_mut();
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        // Small files, revalidated each time, so an upgraded gateway serves its own pages.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_ui_folder_is_embedded_once() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|asset| asset.name.into()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "list each file of gateway/ui/ in ASSETS");
        for asset in ASSETS {
            let bytes = std::fs::read(folder.join(asset.name)).unwrap();
            assert_eq!(asset.bytes, bytes.as_slice(), "{}", asset.name);
        }
    }

    #[test]
    fn no_asset_names_another_origin() {
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
                assert!(
                    !text.contains(scheme),
                    "{} names {scheme}: the UI fetches nothing from elsewhere",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        for asset in ASSETS {
            let expected = match asset.name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("html") => "text/html",
                Some("css") => "text/css",
                Some("js") => "text/javascript",
                other => panic!("{}: no content type for {other:?}", asset.name),
            };
            assert!(asset.content_type.starts_with(expected), "{}", asset.name);
        }
    }

    async fn get(gateway: &Gateway, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        use http_body_util::{BodyExt, Empty};
        let request = http::Request::get(path)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = gateway.handle(request).await;
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn the_gateway_serves_every_asset_with_its_type_and_the_policy_without_a_token() {
        // Auth is on in this gateway: the files need no token, the API still does.
        let gateway = super::super::fuzz::gateway();
        for asset in ASSETS {
            let (status, headers, body) = get(&gateway, &format!("/ui/{}", asset.name)).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.name);
            assert_eq!(headers[CONTENT_TYPE], asset.content_type);
            assert_eq!(headers[CONTENT_SECURITY_POLICY], CSP);
            assert!(CSP.starts_with("default-src 'self';"));
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(body.as_ref(), asset.bytes);
        }
        let (status, _, index) = get(&gateway, "/ui/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(index.starts_with(b"<!doctype html>"));
        let (status, headers, _) = get(&gateway, "/ui").await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(headers[LOCATION], "/ui/");
        let (status, _, config) = get(&gateway, "/ui/config.json").await;
        assert_eq!(status, StatusCode::OK);
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["auth"], true);
        assert_eq!(config["allow_cancel"], true);
        for missing in ["/ui/nope.js", "/ui/../metrics", "/ui/style.css/x"] {
            let (status, _, _) = get(&gateway, missing).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        }
        let (status, _, _) = get(&gateway, "/v1/queries").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the API still wants a token"
        );
    }

    #[test]
    fn ui_paths_are_only_the_ui() {
        assert!(is_ui_path("/ui"));
        assert!(is_ui_path("/ui/"));
        assert!(is_ui_path("/ui/app.js"));
        assert!(!is_ui_path("/uix"));
        assert!(!is_ui_path("/v1/query"));
    }
}
