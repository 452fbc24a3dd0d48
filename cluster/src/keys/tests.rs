//! Tests of the cluster's keys: sealing, signing, rotation and replay.

use super::*;

fn secrets(list: &[&str]) -> Secrets {
    Secrets::from(list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

#[test]
fn the_secret_reads_as_one_string_or_a_list() {
    #[derive(serde::Deserialize)]
    struct Section {
        secret: Secrets,
    }
    let one: Section = toml::from_str("secret = \"a\"").unwrap();
    assert_eq!(one.secret, "a");
    let two: Section = toml::from_str("secret = [\"new\", \"old\"]").unwrap();
    assert_eq!(two.secret.all(), ["new", "old"]);
    assert_eq!(two.secret.first(), Some("new"));
    let none: Section = toml::from_str("secret = \"\"").unwrap();
    assert!(none.secret.is_empty());
    assert!(
        !format!("{:?}", two.secret).contains("old"),
        "never printed"
    );
}

#[test]
fn a_sealed_datagram_opens_only_with_a_key_of_the_cluster_and_hides_its_payload() {
    let now = unix_ms();
    let sealer = Sealer::new(&secrets(&["s3cret"]), Traffic::Reports);
    let payload = b"taskmanager tm-1 has 8 free slots at 10.0.0.7:50051";
    let sealed = sealer.seal(payload, now);
    assert_eq!(sealed.len(), payload.len() + SEAL_OVERHEAD);
    assert!(
        !sealed.windows(8).any(|window| window == &payload[..8]),
        "encrypted"
    );
    let opened = sealer.open(&sealed, now + 5).unwrap();
    assert_eq!(opened.payload, payload);
    assert_eq!(opened.sent_ms, now);

    let refused = |reason| refused(Traffic::Reports, reason);
    let before = [
        Refused::Unsealed,
        Refused::UnknownKey,
        Refused::Forged,
        Refused::Stale,
    ]
    .map(refused);
    // Plain bytes, another secret, one flipped bit, an old datagram.
    assert_eq!(sealer.open(payload, now).unwrap_err(), Refused::Unsealed);
    let other = Sealer::new(&secrets(&["other"]), Traffic::Reports).seal(payload, now);
    assert_eq!(sealer.open(&other, now).unwrap_err(), Refused::UnknownKey);
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(sealer.open(&flipped, now).unwrap_err(), Refused::Forged);
    let mut tampered = sealed.clone();
    tampered[40] ^= 0x80;
    assert_eq!(sealer.open(&tampered, now).unwrap_err(), Refused::Forged);
    assert_eq!(
        sealer.open(&sealed, now + MAX_SKEW_MS + 1).unwrap_err(),
        Refused::Stale
    );
    let after = [
        Refused::Unsealed,
        Refused::UnknownKey,
        Refused::Forged,
        Refused::Stale,
    ]
    .map(refused);
    for (before, after) in before.iter().zip(after) {
        assert!(after > *before, "every refusal is counted");
    }
    // Each traffic has its own key: a report does not open as gossip.
    let gossip = Sealer::new(&secrets(&["s3cret"]), Traffic::Gossip);
    assert_eq!(gossip.open(&sealed, now).unwrap_err(), Refused::UnknownKey);
}

#[test]
fn rotation_accepts_every_listed_secret_and_seals_with_the_first() {
    let now = unix_ms();
    let old = Sealer::new(&secrets(&["old"]), Traffic::Gossip);
    let both = Sealer::new(&secrets(&["new", "old"]), Traffic::Gossip);
    let new = Sealer::new(&secrets(&["new"]), Traffic::Gossip);
    // Step 1: every member holds [old, new] or [old]; step 2: [new, old]; step 3: [new].
    let adding = Sealer::new(&secrets(&["old", "new"]), Traffic::Gossip);
    assert!(old.open(&adding.seal(b"x", now), now).is_ok());
    assert!(both.open(&adding.seal(b"x", now), now).is_ok());
    assert!(adding.open(&both.seal(b"x", now), now).is_ok());
    assert!(new.open(&both.seal(b"x", now), now).is_ok());
    assert!(both.open(&new.seal(b"x", now), now).is_ok());
    assert!(old.open(&new.seal(b"x", now), now).is_err());
}

#[test]
fn without_a_secret_datagrams_pass_unchanged() {
    let open = Sealer::open_cluster();
    assert!(!open.is_sealed());
    assert_eq!(open.seal(b"plain", 0), b"plain");
    assert_eq!(open.open(b"plain", 0).unwrap().payload, b"plain");
}

#[test]
fn a_call_signature_names_its_method_and_query_and_plays_once() {
    let now = unix_ms();
    let signer = CallSigner::new(&secrets(&["s3cret"]));
    let verifier = CallVerifier::new(&secrets(&["s3cret"]));
    let path = "/arrow.flight.protocol.FlightService/DoGet";
    let signature = signer.sign(path, "q-1", now).unwrap();
    assert!(!signature.contains("s3cret"));
    assert_eq!(
        verifier.verify(path, "q-2", Some(&signature), now),
        Err(Refused::Forged),
        "another query"
    );
    assert_eq!(
        verifier.verify("/other/Method", "q-1", Some(&signature), now),
        Err(Refused::Forged),
        "another method"
    );
    assert_eq!(verifier.verify(path, "q-1", Some(&signature), now), Ok(()));
    assert_eq!(
        verifier.verify(path, "q-1", Some(&signature), now),
        Err(Refused::Replayed),
        "played again"
    );
    let late = signer.sign(path, "q-1", now - MAX_SKEW_MS - 1).unwrap();
    assert_eq!(
        verifier.verify(path, "q-1", Some(&late), now),
        Err(Refused::Stale)
    );
    assert_eq!(
        verifier.verify(path, "q-1", None, now),
        Err(Refused::Unsealed)
    );
    assert_eq!(
        verifier.verify(path, "q-1", Some("s3cret"), now),
        Err(Refused::Unsealed),
        "the secret itself is no signature"
    );
    let stranger = CallSigner::new(&secrets(&["other"]))
        .sign(path, "q-1", now)
        .unwrap();
    assert_eq!(
        verifier.verify(path, "q-1", Some(&stranger), now),
        Err(Refused::UnknownKey)
    );
    // Rotation: a verifier holding both accepts either signer.
    let rotating = CallVerifier::new(&secrets(&["new", "s3cret"]));
    let fresh = signer.sign(path, "", now).unwrap();
    assert_eq!(rotating.verify(path, "", Some(&fresh), now), Ok(()));
    // No secret: nothing signed, nothing checked.
    assert!(
        CallSigner::new(&Secrets::default())
            .sign(path, "", now)
            .is_none()
    );
    assert!(
        CallVerifier::new(&Secrets::default())
            .verify(path, "", None, now)
            .is_ok()
    );
}

#[test]
fn the_replay_window_remembers_nonces_for_twice_the_skew() {
    let mut window = ReplayWindow::new(0);
    assert!(window.first_time(&[1; 24], 0));
    assert!(!window.first_time(&[1; 24], 1));
    assert!(
        !window.first_time(&[1; 24], 2 * MAX_SKEW_MS + 1),
        "kept over one turn"
    );
    assert!(window.first_time(&[2; 24], 2 * MAX_SKEW_MS + 1));
    assert!(
        window.first_time(&[1; 24], 4 * MAX_SKEW_MS + 2),
        "dropped after two"
    );
    assert_eq!(window.len(), 2);
}

#[test]
fn a_ticket_opens_for_its_lifetime_and_not_after_nor_from_the_future() {
    let now = unix_ms();
    let sealer = Sealer::new(&secrets(&["s3cret"]), Traffic::Tickets);
    let sealed = sealer.seal(b"statement", now);
    let life = 60_000;
    assert!(sealer.open_within(&sealed, now + life, life).is_ok());
    assert_eq!(
        sealer
            .open_within(&sealed, now + life + 1, life)
            .unwrap_err(),
        Refused::Stale
    );
    assert_eq!(
        sealer
            .open_within(&sealed, now - MAX_SKEW_MS - 1, life)
            .unwrap_err(),
        Refused::Stale,
        "sealed more than the allowed skew ahead of this clock"
    );
    // Another traffic's key does not open it.
    let calls = Sealer::new(&secrets(&["s3cret"]), Traffic::Reports);
    assert_eq!(
        calls.open_within(&sealed, now, life).unwrap_err(),
        Refused::UnknownKey
    );
}
