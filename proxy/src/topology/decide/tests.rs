use super::*;
use crate::config::BackendNode;
use std::time::Duration;

fn decider(n: usize) -> Decider {
    let nodes = (0..n)
        .map(|i| {
            NodeView::new(&BackendNode {
                id: i,
                host: "127.0.0.1".into(),
                port: 5432 + i as u16,
                weight: 1.0,
                data_dir: None,
                flag: NodeFlag::AllowToFailover,
            })
        })
        .collect();
    Decider::new(nodes, 2)
}

fn ok(rec: bool, tl: u32) -> ProbeOutcome {
    ProbeOutcome::Ok {
        in_recovery: rec,
        timeline: Some(tl),
        lsn: Some(0),
        receiver: None,
        replay_lag: None,
        wal_name: None,
        senders: Vec::new(),
        latency: Duration::from_millis(1),
    }
}

fn refused() -> ProbeOutcome {
    ProbeOutcome::Refused("connection refused".into())
}

/// Observes each answer and decides after each one, as the monitor does.
fn each(d: &mut Decider, obs: Vec<(usize, ProbeOutcome)>) -> Decision {
    let mut last = d.decide();
    for (id, o) in obs {
        d.observe(id, o, SystemTime::now());
        last = d.decide();
    }
    last
}

fn round(d: &mut Decider, obs: Vec<(usize, ProbeOutcome)>) -> Decision {
    for (id, o) in obs {
        d.observe(id, o, SystemTime::now());
    }
    d.decide()
}

#[test]
fn normal_failover() {
    let mut d = decider(2);
    assert_eq!(
        round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]).primary,
        Some(0)
    );
    let r = round(&mut d, vec![(0, refused()), (1, ok(true, 1))]);
    assert_eq!(r.primary, None);
    assert!(r.reason.is_some());
    assert_eq!(round(&mut d, vec![(1, ok(false, 2))]).primary, Some(1));
    assert_eq!(d.nodes[0].health, Health::Down);
    assert_eq!(d.nodes[1].role, Role::Primary);
}

#[test]
fn old_primary_back_on_old_timeline_is_fenced_until_standby() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
    round(&mut d, vec![(0, refused()), (1, ok(false, 2))]);
    // Split brain: the old primary restarts as a primary on timeline 1.
    for _ in 0..3 {
        let r = round(&mut d, vec![(0, ok(false, 1)), (1, ok(false, 2))]);
        assert_eq!(r.primary, Some(1));
    }
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
    // The new primary dies: the stale one must still get nothing.
    let r = round(&mut d, vec![(1, refused()), (0, ok(false, 1))]);
    assert_eq!(r.primary, None);
    assert!(r.reason.unwrap().contains("newest timeline 2"));
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
    // Rejoined as a standby: fence lifted, it is a standby.
    round(&mut d, vec![(0, ok(true, 2))]);
    assert!(d.nodes[0].fenced.is_none());
    assert_eq!(d.nodes[0].role, Role::Standby);
}

#[test]
fn a_stale_primary_answering_first_at_startup_is_never_chosen() {
    let mut d = decider(2);
    let r = each(&mut d, vec![(0, ok(false, 1))]);
    assert_eq!(r.primary, None, "chosen before node 1 answered");
    assert!(r
        .reason
        .unwrap()
        .contains("waiting for a first probe answer from node 1"));
    assert_ne!(d.nodes[0].role, Role::Primary);
    let r = each(&mut d, vec![(1, ok(false, 2))]);
    assert_eq!(r.primary, Some(1));
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
}

#[test]
fn a_tie_at_startup_is_not_guessed() {
    let mut d = decider(2);
    assert_eq!(each(&mut d, vec![(1, ok(false, 2))]).primary, None);
    let r = each(&mut d, vec![(0, ok(false, 2))]);
    assert_eq!(r.primary, None);
    assert!(r.reason.unwrap().contains("split brain"));
}

#[test]
fn startup_waits_for_a_silent_node_only_for_its_retry_budget() {
    let mut d = decider(2);
    let r = each(
        &mut d,
        vec![
            (0, ok(false, 1)),
            (1, ProbeOutcome::Timeout),
            (1, ProbeOutcome::Timeout),
        ],
    );
    assert_eq!(r.primary, None);
    // Budget 2: the third timeout declares it down, and the wait ends.
    assert_eq!(
        each(&mut d, vec![(1, ProbeOutcome::Timeout)]).primary,
        Some(0)
    );
    // A refused node is down at once: no wait at all.
    let mut d = decider(2);
    assert_eq!(
        each(&mut d, vec![(1, refused()), (0, ok(false, 1))]).primary,
        Some(0)
    );
}

#[test]
fn a_standby_on_a_newer_timeline_proves_an_older_primary_stale() {
    let mut d = decider(3);
    let r = each(
        &mut d,
        vec![(0, ok(false, 1)), (2, ok(true, 2)), (1, refused())],
    );
    assert_eq!(r.primary, None);
    assert!(r.reason.unwrap().contains("newest timeline 2"));
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
    assert_eq!(d.newest_timeline(), 2);
    // The promoted node answers (on its first good probe although it was down).
    assert_eq!(each(&mut d, vec![(1, ok(false, 2))]).primary, Some(1));
}

#[test]
fn tie_means_no_writes_until_operator_decides() {
    let mut d = decider(3);
    let r = round(
        &mut d,
        vec![(0, refused()), (1, ok(false, 2)), (2, ok(false, 2))],
    );
    assert_eq!(r.primary, None);
    assert!(r.reason.unwrap().contains("split brain"));
    d.set_operator_primary(Some(2));
    let r = d.decide();
    assert_eq!(r.primary, Some(2));
    assert_eq!(d.nodes[1].role, Role::StalePrimary);
}

/// Nodes 0 and 1 primaries on timeline 2 (a tie), node 2 a standby; the operator named node 0.
fn tie_settled_by_the_operator() -> Decider {
    let mut d = decider(3);
    round(
        &mut d,
        vec![(0, ok(false, 2)), (1, ok(false, 2)), (2, ok(true, 2))],
    );
    d.set_operator_primary(Some(0));
    assert_eq!(d.decide().primary, Some(0));
    d
}

#[test]
fn operator_choice_ends_when_a_node_shows_a_newer_timeline() {
    let mut d = tie_settled_by_the_operator();
    assert!(d.nodes[1].fenced.is_some());
    // A genuine promotion later: node 2 on timeline 3 takes the writes, the choice is over.
    let r = round(&mut d, vec![(2, ok(false, 3))]);
    assert_eq!(r.primary, Some(2));
    assert_eq!(d.operator_primary(), None);
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
    // SET PRIMARY AUTO afterwards changes nothing; the operator's old node dying neither.
    d.set_operator_primary(None);
    assert_eq!(round(&mut d, vec![(0, refused())]).primary, Some(2));
    // Node 2 dies: nodes on timeline 2 are stale, not an operator's leftover.
    let r = round(&mut d, vec![(2, refused())]);
    assert_eq!(r.primary, None);
    assert!(d.nodes[1].fenced.as_deref().unwrap().contains("timeline 2"));
}

#[test]
fn operator_fences_go_with_the_choice() {
    let mut d = tie_settled_by_the_operator();
    assert!(d.nodes[1].fenced.is_some());
    // SET PRIMARY AUTO: re-evaluated from the timelines, the tie is back (no guess).
    d.set_operator_primary(None);
    let r = d.decide();
    assert_eq!(r.primary, None);
    assert!(r.reason.unwrap().contains("split brain"));
    assert!(d.nodes[1].fenced.is_none());
    // Chosen again, then the operator's node dies: the node it overruled stays fenced, so
    // writes do not go to node 1 meanwhile and back to node 0 when it returns (two histories).
    d.set_operator_primary(Some(0));
    assert_eq!(d.decide().primary, Some(0));
    let r = round(&mut d, vec![(0, refused())]);
    assert_eq!(r.primary, None);
    assert!(d.nodes[1].fenced.as_deref().unwrap().contains("operator"));
    for _ in 0..RISE {
        round(&mut d, vec![(0, ok(false, 2)), (1, ok(false, 2))]);
    }
    assert_eq!(d.decide().primary, Some(0));
    // The overruled node rejoins as a standby: its fence ends with that.
    round(&mut d, vec![(1, ok(true, 2))]);
    assert!(d.nodes[1].fenced.is_none());
    round(&mut d, vec![(1, ok(false, 2))]);
    assert_eq!(d.decide().primary, Some(0), "still the operator's choice");
    // Naming a standby routes nothing to it while it is in recovery.
    d.set_operator_primary(None);
    round(&mut d, vec![(0, refused())]);
    assert_eq!(d.decide().primary, Some(1));
    d.set_operator_primary(Some(2));
    assert_eq!(d.decide().primary, Some(1));
    assert_eq!(
        d.operator_primary(),
        Some(2),
        "waits for node 2's promotion"
    );
}

#[test]
fn a_detached_node_does_not_set_the_newest_timeline() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 2)), (1, ok(true, 2))]);
    assert_eq!(d.decide().primary, Some(0));
    // Node 1 promoted by mistake; the operator detaches it: node 0 keeps the writes.
    d.set_detached(1, true).unwrap();
    assert_eq!(round(&mut d, vec![(1, ok(false, 3))]).primary, Some(0));
    assert_eq!(d.newest_timeline(), 2);
}

#[test]
fn a_primary_promoted_while_the_chosen_node_is_away_ends_the_choice() {
    let mut d = tie_settled_by_the_operator();
    assert_eq!(round(&mut d, vec![(0, refused())]).primary, None);
    // Node 2 promoted on a reused timeline number (no newer timeline to end the choice).
    assert_eq!(round(&mut d, vec![(2, ok(false, 2))]).primary, Some(2));
    assert_eq!(d.operator_primary(), None);
    // Node 1, overruled by the ended choice, stays fenced.
    assert_eq!(round(&mut d, vec![(1, ok(false, 2))]).primary, Some(2));
    // Node 0 returning does not take the writes back: a tie on timeline 2 is not guessed.
    for _ in 0..RISE {
        round(&mut d, vec![(0, ok(false, 2)), (2, ok(false, 2))]);
    }
    assert_ne!(d.decide().primary, Some(0));
}

#[test]
fn operator_may_choose_an_older_timeline_until_a_newer_one_appears() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 1)), (1, ok(false, 2))]);
    d.set_operator_primary(Some(0));
    assert_eq!(d.decide().primary, Some(0));
    for _ in 0..3 {
        assert_eq!(round(&mut d, vec![(1, ok(false, 2))]).primary, Some(0));
    }
    assert_eq!(round(&mut d, vec![(1, ok(false, 3))]).primary, Some(1));
    assert_eq!(d.operator_primary(), None);
}

#[test]
fn standby_never_gets_writes_and_timeouts_use_the_budget() {
    let mut d = decider(2);
    assert_eq!(
        round(&mut d, vec![(0, ok(true, 1)), (1, ok(true, 1))]).primary,
        None
    );
    assert_eq!(round(&mut d, vec![(0, ok(false, 1))]).primary, Some(0));
    for _ in 0..2 {
        assert_eq!(
            round(&mut d, vec![(0, ProbeOutcome::Timeout)]).primary,
            Some(0)
        );
    }
    assert_eq!(
        round(&mut d, vec![(0, ProbeOutcome::Timeout)]).primary,
        None
    );
}

#[test]
fn server_errors_count_toward_the_budget_and_unavailable_is_down_at_once() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
    let too_many = || ProbeOutcome::Error("53300: sorry, too many clients already".into());
    for _ in 0..2 {
        assert_eq!(round(&mut d, vec![(0, too_many())]).primary, Some(0));
    }
    assert_eq!(round(&mut d, vec![(0, ok(false, 1))]).primary, Some(0));
    assert_eq!(d.nodes[0].consecutive_failures, 0);
    let r = round(
        &mut d,
        vec![(
            0,
            ProbeOutcome::Unavailable("57P03: the database system is shutting down".into()),
        )],
    );
    assert_eq!(r.primary, None);
    assert_eq!(d.nodes[0].health, Health::Down);
}

#[test]
fn higher_timeline_wins_immediately() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
    // Standby promoted while the old primary still runs (no kill): newer timeline wins.
    let r = round(&mut d, vec![(0, ok(false, 1)), (1, ok(false, 2))]);
    assert_eq!(r.primary, Some(1));
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
}

#[test]
fn a_promoted_node_is_adopted_on_its_first_good_probe_even_after_being_down() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
    // Node 1 was briefly unreachable (marked down), then comes back already promoted while
    // the old primary has not failed a probe yet.
    round(&mut d, vec![(1, refused())]);
    let r = round(&mut d, vec![(1, ok(false, 2))]);
    assert_eq!(
        r.primary,
        Some(1),
        "a promotion must not wait for a second probe"
    );
    assert_eq!(d.nodes[0].role, Role::StalePrimary);
}

#[test]
fn flapping_node_needs_rise_while_primary_known() {
    let mut d = decider(2);
    round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
    round(&mut d, vec![(1, refused())]);
    round(&mut d, vec![(1, ok(true, 1))]);
    assert_eq!(d.nodes[1].health, Health::Down);
    // Down, it keeps the role it was last seen in.
    assert_eq!(d.nodes[1].role, Role::Standby);
    round(&mut d, vec![(1, ok(true, 1))]);
    assert_eq!(d.nodes[1].health, Health::Up);
}

#[test]
fn always_primary_flag() {
    let mut d = decider(2);
    d.nodes[1].flag = NodeFlag::AlwaysPrimary;
    let r = round(&mut d, vec![(0, ok(false, 3)), (1, ok(true, 1))]);
    assert_eq!(r.primary, None);
    let r = round(&mut d, vec![(1, ok(false, 1))]);
    assert_eq!(r.primary, Some(1));
}
