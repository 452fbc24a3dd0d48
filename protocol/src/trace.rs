//! W3C Trace Context (`traceparent`): one trace id follows a query over every HTTP and gRPC hop,
//! so the logs of every process it touched can be joined.
//!
//! ```text
//! traceparent: 00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>
//! ```

use std::fmt;

/// The header (HTTP) and metadata key (gRPC) that carries the trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One hop's view of a trace: the trace id and the id of the span that makes the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceContext {
    /// Starts a new trace (sampled).
    pub fn root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: 0x01,
        }
    }

    /// Parses a `traceparent` value. Per the W3C rules a value that is malformed, of version
    /// `ff`, or with an all-zero id is ignored (`None`); a later version is read by its first
    /// four fields.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut fields = header.split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let span_id = fields.next()?;
        let flags = fields.next()?;
        let rest = fields.next();
        let hex = |text: &str, len: usize| {
            text.len() == len
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        };
        if !hex(version, 2) || version == "ff" || !hex(trace_id, 32) || !hex(span_id, 16) {
            return None;
        }
        if !hex(flags, 2) || (version == "00" && rest.is_some()) {
            return None;
        }
        let context = Self {
            trace_id: u128::from_str_radix(trace_id, 16).ok()?,
            span_id: u64::from_str_radix(span_id, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (context.trace_id != 0 && context.span_id != 0).then_some(context)
    }

    /// The context of a call made from this hop: same trace, a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits: what logs and `GET /v1/query/{id}` show.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The `traceparent` value naming this hop as the parent.
    pub fn header(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let value = uuid::Uuid::new_v4().as_u128();
        if value != 0 {
            return value;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let value = uuid::Uuid::new_v4().as_u64_pair().0;
        if value != 0 {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_child_keeps_the_trace() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(text).unwrap();
        assert_eq!(parsed.header(), text);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        let child = parsed.child();
        assert_eq!(child.trace_id(), parsed.trace_id());
        assert_ne!(child.span_id(), parsed.span_id());
        let root = TraceContext::root();
        assert_eq!(TraceContext::parse(&root.header()), Some(root));
        assert_ne!(TraceContext::root().trace_id(), root.trace_id());
    }

    #[test]
    fn malformed_or_zero_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        // A later version is read by its first four fields.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .is_some()
        );
    }
}
