//! The result formats the gateway can stream.

/// A result format, chosen by the request's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// The Arrow IPC stream format (the default).
    ArrowStream,
    /// One JSON array of row objects.
    Json,
    /// One JSON row object per line.
    NdJson,
    /// Comma-separated values with a header row.
    Csv,
}

impl MediaType {
    /// Every format, the default first.
    pub const ALL: [MediaType; 4] = [Self::ArrowStream, Self::Json, Self::NdJson, Self::Csv];

    /// Returns the media type's name as sent in `Content-Type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ArrowStream => "application/vnd.apache.arrow.stream",
            Self::Json => "application/json",
            Self::NdJson => "application/x-ndjson",
            Self::Csv => "text/csv",
        }
    }

    /// Chooses the format for an `Accept` header value: the first listed type this gateway
    /// serves wins, `*/*` and a missing header mean Arrow, and `None` means nothing acceptable.
    pub fn negotiate(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept.map(str::trim).filter(|value| !value.is_empty()) else {
            return Some(Self::ArrowStream);
        };
        let mut ranges: Vec<(f32, usize, &str)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(position, range)| {
                let mut parts = range.split(';');
                let name = parts.next()?.trim();
                let quality = parts
                    .filter_map(|param| param.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (quality > 0.0).then_some((quality, position, name))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges.into_iter().find_map(|(_, _, name)| {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "*/*" | "application/*" => Some(Self::ArrowStream),
                "text/*" => Some(Self::Csv),
                "application/vnd.apache.arrow.stream" | "application/x-arrow-stream" => {
                    Some(Self::ArrowStream)
                }
                "application/json" => Some(Self::Json),
                "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                    Some(Self::NdJson)
                }
                "text/csv" => Some(Self::Csv),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_by_order_and_quality() {
        assert_eq!(MediaType::negotiate(None), Some(MediaType::ArrowStream));
        assert_eq!(
            MediaType::negotiate(Some("*/*")),
            Some(MediaType::ArrowStream)
        );
        assert_eq!(
            MediaType::negotiate(Some("application/json")),
            Some(MediaType::Json)
        );
        assert_eq!(
            MediaType::negotiate(Some("text/csv;q=0.5, application/x-ndjson")),
            Some(MediaType::NdJson)
        );
        assert_eq!(
            MediaType::negotiate(Some("image/png, text/csv")),
            Some(MediaType::Csv)
        );
        assert_eq!(MediaType::negotiate(Some("image/png")), None);
        assert_eq!(MediaType::negotiate(Some("application/json;q=0")), None);
    }
}
