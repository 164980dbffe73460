//! The gs2 channel-binding flag against what was offered and chosen ([`Binding`]).

use super::*;

const CF: &[u8] = b",n=,r=abcdef";

fn first(flag: &[u8], b: Binding<'_>) -> Result<String, ScramError> {
    let v = ScramVerifier::from_password("pw");
    let cf = [flag, CF].concat();
    server_first_bound(&v, &cf, b).map(|(st, _)| st.channel_binding)
}

#[test]
fn gs2_flags_judged_as_postgres() {
    let hash: &[u8] = b"HASH";
    // Not offered: n and y fine, p refused.
    assert_eq!(first(b"n,", Binding::NotOffered).unwrap(), "biws");
    assert_eq!(first(b"y,", Binding::NotOffered).unwrap(), "eSws");
    let p = b"p=tls-server-end-point,";
    assert_eq!(
        first(p, Binding::NotOffered),
        Err(ScramError::ChannelBinding)
    );
    // Offered, SCRAM-SHA-256 chosen: y is a downgrade, n fine, p refused.
    assert_eq!(first(b"n,", Binding::OfferedNotChosen).unwrap(), "biws");
    let o = Binding::OfferedNotChosen;
    assert_eq!(first(b"y,", o), Err(ScramError::ChannelBinding));
    assert_eq!(first(p, o), Err(ScramError::ChannelBinding));
    // PLUS chosen: only p=tls-server-end-point, and c= carries header + hash.
    let c = Binding::Chosen(hash);
    let expected = STANDARD.encode(b"p=tls-server-end-point,,HASH");
    assert_eq!(first(p, c).unwrap(), expected);
    assert_eq!(first(b"n,", c), Err(ScramError::ChannelBinding));
    assert_eq!(first(b"y,", c), Err(ScramError::ChannelBinding));
    assert_eq!(first(b"p=tls-unique,", c), Err(ScramError::ChannelBinding));
    // A truncated header does not panic.
    let v = ScramVerifier::from_password("pw");
    assert!(server_first_bound(&v, b"p=tls-server-end-point,", c).is_err());
}
