//! Advertised addresses: what peers are told to call, as opposed to what a process binds.
//!
//! Every listener has `listen` (what it binds) and `advertise` (the `host:port` peers are told;
//! the host may be a DNS name). A process bound to every interface (`0.0.0.0` or `::`, as in
//! a container) must never tell peers to call `0.0.0.0:PORT`:
//!
//! ```text
//!  advertise set ─────────────────────────────▶ advertise (its port defaults to the bound one)
//!  listen is a host's address ────────────────▶ the bound address
//!  listen is 0.0.0.0 / :: ──first seed resolves─▶ this host's address on the route to it
//!                         └─no seed resolves────▶ refuse to start, naming the setting
//! ```
//! Finding the route sends nothing: a UDP socket is connected, never written to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Returns the `host:port` peers are told to call for a listener bound at `bound`.
/// `setting` names its `advertise` key in errors (`taskmanager.advertise`); `seeds` are the
/// gossip seeds (`host:port`) whose route picks the address of a process bound to every
/// interface.
pub async fn advertised_address(
    setting: &str,
    bound: SocketAddr,
    advertise: Option<&str>,
    seeds: &[String],
) -> anyhow::Result<String> {
    if let Some(advertise) = advertise.map(str::trim).filter(|text| !text.is_empty()) {
        return with_port(setting, advertise, bound.port());
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    match route_address(bound.ip(), seeds).await {
        Some(ip) => Ok(SocketAddr::new(ip, bound.port()).to_string()),
        None => anyhow::bail!(
            "{bound} listens on every interface and no gossip seed shows this host's address: \
             set {setting} to the host:port peers reach this process at"
        ),
    }
}

/// Reads `advertise` as `host:port` or a bare host (then `port`); port 0 also means `port`.
fn with_port(setting: &str, advertise: &str, port: u16) -> anyhow::Result<String> {
    let invalid = |why: &str| anyhow::anyhow!("{setting} `{advertise}`: {why}");
    if let Ok(address) = advertise.parse::<SocketAddr>() {
        if address.ip().is_unspecified() {
            return Err(invalid("peers cannot call an unspecified address"));
        }
        let port = if address.port() == 0 {
            port
        } else {
            address.port()
        };
        return Ok(SocketAddr::new(address.ip(), port).to_string());
    }
    if let Ok(ip) = advertise.trim_matches(['[', ']']).parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err(invalid("peers cannot call an unspecified address"));
        }
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    let (host, port) = match advertise.rsplit_once(':') {
        Some((host, text)) => match text.parse::<u16>() {
            Ok(0) => (host, port),
            Ok(explicit) => (host, explicit),
            Err(_) => return Err(invalid("the port is not a number")),
        },
        None => (advertise, port),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'));
    if !valid {
        return Err(invalid(
            "expected host:port, host being an IP address or a DNS name",
        ));
    }
    Ok(format!("{host}:{port}"))
}

/// The host of an advertised `host:port` (an IPv6 address without its brackets).
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// This host's address on the route to the first seed that resolves, in the family of
/// `unspecified`.
async fn route_address(unspecified: IpAddr, seeds: &[String]) -> Option<IpAddr> {
    let local = match unspecified {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    for seed in seeds {
        let Ok(resolved) = tokio::net::lookup_host(seed.as_str()).await else {
            continue;
        };
        for target in resolved.filter(|target| target.is_ipv4() == local.is_ipv4()) {
            let Ok(socket) = std::net::UdpSocket::bind(SocketAddr::new(local, 0)) else {
                continue;
            };
            let route = socket.connect(target).and_then(|()| socket.local_addr());
            if let Ok(address) = route
                && !address.ip().is_unspecified()
            {
                return Some(address.ip());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn an_explicit_advertise_wins_and_takes_the_bound_port_when_it_has_none() {
        let any = bound("0.0.0.0:7001");
        for (advertise, expected) in [
            ("tm-1.flotilla.svc:9000", "tm-1.flotilla.svc:9000"),
            ("tm-1.flotilla.svc", "tm-1.flotilla.svc:7001"),
            ("tm-1:0", "tm-1:7001"),
            ("10.1.2.3:9000", "10.1.2.3:9000"),
            ("10.1.2.3", "10.1.2.3:7001"),
            ("[fd00::1]:9000", "[fd00::1]:9000"),
            ("fd00::1", "[fd00::1]:7001"),
        ] {
            let address = advertised_address("x.advertise", any, Some(advertise), &[])
                .await
                .unwrap();
            assert_eq!(address, expected, "{advertise}");
        }
    }

    #[tokio::test]
    async fn a_bound_host_address_is_advertised_as_it_is() {
        let address = advertised_address("x.advertise", bound("127.0.0.1:7001"), None, &[])
            .await
            .unwrap();
        assert_eq!(address, "127.0.0.1:7001");
    }

    #[tokio::test]
    async fn every_interface_advertises_the_address_on_the_route_to_a_seed() {
        let seeds = vec!["not a host".to_string(), "127.0.0.1:7946".to_string()];
        let address = advertised_address("x.advertise", bound("0.0.0.0:7001"), None, &seeds)
            .await
            .unwrap();
        assert_eq!(address, "127.0.0.1:7001");
    }

    #[tokio::test]
    async fn every_interface_without_a_seed_or_advertise_refuses_naming_the_setting() {
        // No DNS in tests: an IPv6 seed shows nothing to an IPv4 listener.
        for seeds in [vec![], vec!["[::1]:7946".to_string()]] {
            let error =
                advertised_address("taskmanager.advertise", bound("0.0.0.0:7001"), None, &seeds)
                    .await
                    .unwrap_err()
                    .to_string();
            assert!(error.contains("set taskmanager.advertise"), "{error}");
        }
    }

    #[tokio::test]
    async fn unusable_advertise_values_are_refused() {
        for advertise in ["0.0.0.0:7001", "::", "host:port", "a host:1", ":7001"] {
            let result =
                advertised_address("x.advertise", bound("127.0.0.1:1"), Some(advertise), &[]).await;
            assert!(result.is_err(), "{advertise} was accepted");
        }
    }

    #[test]
    fn the_host_of_an_advertised_address_is_without_port_or_brackets() {
        assert_eq!(host_of("tm-1.example:50051"), "tm-1.example");
        assert_eq!(host_of("198.18.0.11:7946"), "198.18.0.11");
        assert_eq!(host_of("[::1]:50051"), "::1");
    }
}
