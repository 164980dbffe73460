//! Unit tests of the cancel registry and cancel targets.

use super::*;

#[test]
fn keys_map_and_vanish_with_the_session() {
    let r = CancelRegistry::new();
    let h = r.register(ClientMeta::default(), None);
    assert!(
        h.pid > PID_MAX_LIMIT && h.pid == h.id,
        "no backend can have it"
    );
    assert!(r.lookup(h.pid, &h.secret).is_none(), "no backend yet");
    let key = BackendKey {
        addr: "127.0.0.1:5432".parse().unwrap(),
        pid: 42,
        secret: vec![1, 2, 3, 4],
        node: 1,
        in_flight: Default::default(),
    };
    let session = Arc::new(crate::session::forward::Shared::new());
    h.set_session(session.clone());
    assert!(
        r.lookup(h.pid, &h.secret).is_none(),
        "no server connection held"
    );
    session.set_backend(Some(Arc::new(key)));
    assert_eq!(r.lookup(h.pid, &h.secret).unwrap().key.pid, 42);
    // A cancel is meant for the request running when it arrived: once that one has ended
    // (a ReadyForQuery), it is not sent to whatever runs next.
    let target = r.lookup(h.pid, &h.secret).unwrap();
    assert!(target.still_held());
    session.ready_sent();
    assert!(!target.still_held());
    assert_eq!(r.clients(0)[0].node, Some(1));
    assert_eq!(r.clients(0)[0].server_pid, Some(42));
    let mut wrong = h.secret;
    wrong[0] ^= 1;
    assert!(r.lookup(h.pid, &wrong).is_none());
    let pid = h.pid;
    drop(h);
    assert!(r.lookup(pid, &[0; 4]).is_none());
    assert!(r.is_empty());
}

#[test]
fn clients_told_the_same_server_pid_are_told_apart_by_their_secret() {
    let r = CancelRegistry::new();
    let key = |pid, node| {
        Arc::new(BackendKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid,
            secret: vec![1, 2, 3, 4],
            node,
            in_flight: Default::default(),
        })
    };
    // Two clients on servers of different nodes that happen to have the same pid.
    let (a, b) = (
        r.register(ClientMeta::default(), Some(4242)),
        r.register(ClientMeta::default(), Some(4242)),
    );
    assert_eq!((a.pid, b.pid), (4242, 4242));
    assert_ne!(a.id, b.id);
    for (h, node) in [(&a, 0), (&b, 1)] {
        let session = Arc::new(Shared::new());
        h.set_session(session.clone());
        session.set_backend(Some(key(4242, node)));
    }
    assert_eq!(r.lookup(4242, &a.secret).unwrap().key.node, 0);
    assert_eq!(r.lookup(4242, &b.secret).unwrap().key.node, 1);
    // A client's id is not a pid it was told.
    assert!(r.lookup(a.id, &a.secret).is_none());
    assert_eq!(r.clients(0).len(), 2);
    drop(a);
    assert!(r.lookup(4242, &b.secret).is_some());
    drop(b);
    assert!(r.by_server_pid.is_empty() && r.is_empty());
    // A pid no process can have is never taken for a server's.
    let h = r.register(ClientMeta::default(), Some(0));
    assert!(h.pid > PID_MAX_LIMIT);
}

#[tokio::test]
async fn no_cancel_for_a_connection_that_changed_hands() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key = Arc::new(BackendKey {
        addr: listener.local_addr().unwrap(),
        pid: 7,
        secret: vec![1, 2, 3, 4],
        node: 0,
        in_flight: Default::default(),
    });
    let r = CancelRegistry::new();
    let h = r.register(ClientMeta::default(), None);
    let session = Arc::new(Shared::new());
    h.set_session(session.clone());
    session.set_backend(Some(key.clone()));
    let target = r.lookup(h.pid, &h.secret).expect("target");
    assert!(target.still_held());
    // The client's transaction ends and the connection goes back to the pool.
    session.set_backend(None);
    assert!(!target.still_held());
    let packet = received(&listener, target.send()).await;
    assert!(packet.is_empty(), "cancel sent for a released connection");
}

/// What the fake server at `listener` reads on the one connection `sending` makes.
async fn received(
    listener: &tokio::net::TcpListener,
    sending: impl std::future::Future<Output = ()> + Send + 'static,
) -> Vec<u8> {
    let sent = tokio::spawn(sending);
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("cancel connection")
        .unwrap();
    let mut packet = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut packet)
        .await
        .unwrap();
    sent.await.unwrap();
    packet
}

#[tokio::test]
async fn no_cancel_packet_without_a_backend_key() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut key = BackendKey {
        addr: listener.local_addr().unwrap(),
        pid: 0,
        secret: Vec::new(),
        node: 0,
        in_flight: Default::default(),
    };
    assert!(!key.can_cancel());
    send_cancel(Arc::new(key.clone())).await;
    let quiet = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(quiet.is_err(), "a keyless server must not be connected to");
    key.pid = 7;
    key.secret = vec![1, 2, 3, 4];
    assert!(key.can_cancel());
    let packet = received(&listener, send_cancel(Arc::new(key))).await;
    assert_eq!(&packet[8..], &[0, 0, 0, 7, 1, 2, 3, 4]);
}
