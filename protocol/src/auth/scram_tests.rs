//! The SCRAM server exchange: verifiers, messages, malformed input.

use super::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

/// Runs a full exchange with postgres-protocol's client (the one tokio-postgres uses).
fn login(v: &ScramVerifier, password: &str, cb: ChannelBinding) -> Result<(), ScramError> {
    let mut client = ScramSha256::new(password.as_bytes(), cb);
    let (state, first) = server_first(v, client.message())?;
    client.update(&first).unwrap();
    let last = state.verify_final(client.message())?;
    client.finish(&last).unwrap();
    Ok(())
}

#[test]
fn real_client_authenticates_against_from_password() {
    let v = ScramVerifier::from_password("pencil");
    assert_eq!((v.iterations(), v.salt().len()), (4096, 16));
    login(&v, "pencil", ChannelBinding::unsupported()).unwrap();
    login(&v, "pencil", ChannelBinding::unrequested()).unwrap();
    let err = login(&v, "pen", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(err, ScramError::InvalidProof);
    assert_eq!(err.sqlstate(), "28P01");
}

#[test]
fn postgres_verifier_string_parses_and_authenticates() {
    let stored = postgres_protocol::password::scram_sha_256(b"hunter2");
    let v = ScramVerifier::parse(&stored).unwrap();
    assert_eq!(v.to_string(), stored);
    login(&v, "hunter2", ChannelBinding::unsupported()).unwrap();
    assert!(login(&v, "hunter3", ChannelBinding::unsupported()).is_err());
}

#[test]
fn saslprep_matches_postgres_protocol() {
    // soft hyphen is mapped to nothing by SASLprep; BEL is prohibited, so the raw bytes are used
    for password in ["pass\u{AD}word", "bell\u{7}", "plain"] {
        let pg = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
            password.as_bytes(),
        ))
        .unwrap();
        let ours = ScramVerifier::with_salt(password, pg.salt(), pg.iterations());
        assert_eq!(ours, pg, "{password:?}");
    }
    let v = ScramVerifier::from_password("pass\u{AD}word");
    login(&v, "password", ChannelBinding::unsupported()).unwrap();
}

#[test]
fn mock_verifier_is_stable_and_always_fails() {
    let a = ScramVerifier::mock_for("ghost", b"server secret");
    assert_eq!(a, ScramVerifier::mock_for("ghost", b"server secret"));
    assert_ne!(
        a.salt(),
        ScramVerifier::mock_for("ghost2", b"server secret").salt()
    );
    assert_eq!(
        (a.iterations(), a.salt().len(), a.is_mock()),
        (4096, 16, true)
    );
    for pw in ["", "ghost", "server secret"] {
        assert_eq!(
            login(&a, pw, ChannelBinding::unsupported()),
            Err(ScramError::InvalidProof)
        );
    }
}

#[test]
fn verifier_parse_errors() {
    let good = ScramVerifier::from_password("x").to_string();
    let (head, keys) = good.rsplit_once('$').unwrap();
    let (stored, _) = keys.split_once(':').unwrap();
    for bad in [
        "",
        "md5abc",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:c2FsdA==",
        "SCRAM-SHA-256$0:c2FsdA==$a:b",
        "SCRAM-SHA-256$x:c2FsdA==$a:b",
        "SCRAM-SHA-256$4096:!!$a:b",
        &format!("{head}${stored}"),
        &format!("{head}${stored}:c2hvcnQ="),
    ] {
        let err = ScramVerifier::parse(bad).unwrap_err();
        assert!(matches!(err, ScramError::InvalidVerifier(_)), "{bad}");
    }
}

#[test]
fn client_first_errors() {
    use ScramError::{ChannelBinding as Cb, Malformed as M, Unsupported as U};
    let v = ScramVerifier::mock_for("u", b"k");
    let flag = M("invalid gs2 channel-binding flag");
    let nonce = M("expected nonce attribute");
    let cases: [(&[u8], ScramError); 11] = [
        (b"p=tls-server-end-point,,n=,r=abc", Cb),
        (b"n,a=admin,n=,r=abc", U("authorization identity")),
        (b"n,,m=x,n=,r=abc", U("mandatory extension")),
        (b"", flag.clone()),
        (b"x,,n=,r=abc", flag),
        (b"n,x", M("invalid gs2 header")),
        (b"n,,r=abc", M("expected username attribute")),
        (b"n,,n=", nonce.clone()),
        (b"n,,n=,r=", nonce.clone()),
        (b"n,,n=,r=a\xffb", nonce),
        (b"n,,n=,r=abc,1", M("invalid extension attribute")),
    ];
    for (msg, want) in cases {
        assert_eq!(server_first(&v, msg).unwrap_err(), want, "{msg:?}");
    }
    assert_eq!(Cb.sqlstate(), "08P01");
    assert_eq!(U("x").sqlstate(), "0A000");
    assert!(server_first(&v, b"n,,n=,r=abc,x=ext").is_ok());
}

#[test]
fn client_final_errors() {
    use ScramError::{ChannelBinding as Cb, Malformed as M, NonceMismatch as Nm};
    let v = ScramVerifier::mock_for("u", b"k");
    let p = STANDARD.encode([0u8; 32]);
    let cases: [(&str, ScramError); 11] = [
        ("c=biws,r={n}", M("missing proof")),
        ("c=eSws,r={n},p={p}", Cb),
        ("c=biws,r=abc,p={p}", Nm),
        ("c=biws,r={n}x,p={p}", Nm),
        ("r={n},p={p}", M("expected channel-binding attribute")),
        ("c=biws,p={p}", M("expected nonce attribute")),
        ("c=biws,r={n},p=!!", M("invalid proof")),
        ("c=biws,r={n},p=AAAA", M("invalid proof")),
        (
            "c=biws,r={n},p={p},x=1",
            M("proof must be the last attribute"),
        ),
        ("c=biws,r={n},1,p={p}", M("invalid extension attribute")),
        ("c=biws,r={n},p={p}", ScramError::InvalidProof),
    ];
    for (template, want) in cases {
        let (state, first) = server_first(&v, b"n,,n=,r=abc").unwrap();
        let first = String::from_utf8(first).unwrap();
        let n = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        assert!(n.starts_with("abc") && n.len() == 3 + 24);
        let msg = template.replace("{n}", n).replace("{p}", &p);
        let err = state.verify_final(msg.as_bytes()).unwrap_err();
        assert_eq!(err, want, "{msg}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let v = ScramVerifier::mock_for("u", b"k");
    let mut seed = 7u32;
    let alphabet = b"npyacmr=,biwsAZ09+/\x00\xff";
    for n in 0..3000usize {
        let msg: Vec<u8> = (0..n % 40)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                alphabet[(seed >> 16) as usize % alphabet.len()]
            })
            .collect();
        let _ = server_first(&v, &msg);
        if let Ok((state, _)) = server_first(&v, b"n,,n=,r=x") {
            let _ = state.verify_final(&msg);
        }
    }
}
